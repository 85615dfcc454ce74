// The trace scenario driven by node-postgres (make traces): see python_clients.py for the steps.
// Usage: node node_pg.js '{"host":..,"port":..,"user":..,"password":..,"dbname":..,"sslrootcert":..}'
'use strict';
const fs = require('fs');
const net = require('net');
const { Client } = require('pg');
const { from: copyFrom, to: copyTo } = require('pg-copy-streams');
const { pipeline } = require('stream/promises');
const { Readable, Writable } = require('stream');

const p = JSON.parse(process.argv[2]);
const CANCEL_AFTER = 1000;

function rawCancel(pid, key) {
  // node-postgres has no cancel API: send the CancelRequest ourselves, and as libpq does, keep the
  // connection open until the server closes it (the proxy drops a cancel whose sender hung up at once)
  return new Promise((resolve) => {
    const s = net.connect(p.port, p.host, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0); b.writeInt32BE(80877102, 4); b.writeInt32BE(pid, 8); b.writeInt32BE(key, 12);
      s.write(b);
    });
    s.setTimeout(5000, () => s.destroy());
    s.on('end', () => s.end());
    s.on('close', resolve); s.on('error', resolve);
  });
}

async function main() {
  const c = new Client({
    host: p.host, port: p.port, user: p.user, password: p.password, database: p.dbname,
    application_name: 'trace', ssl: { ca: fs.readFileSync(p.sslrootcert), servername: p.host },
  });
  await c.connect();
  await c.query('CREATE TABLE trace_items (id int PRIMARY KEY, name text NOT NULL)');
  await c.query("INSERT INTO trace_items VALUES (1, 'one'), (2, 'two'); " +
                'SELECT id, name FROM trace_items ORDER BY id; SELECT count(*) AS n FROM trace_items');
  await c.query('SELECT id, name FROM trace_items WHERE id = $1 AND name <> $2', [2, 'zzz']);
  await c.query('SELECT $1::int + $2::int AS sum, $3::text AS label', [40, 2, 'answer']);
  await pipeline(Readable.from(['3\tthree\n4\tfour\n']), c.query(copyFrom('COPY trace_items (id, name) FROM STDIN')));
  const sink = new Writable({ write(chunk, enc, cb) { cb(); } });
  await pipeline(c.query(copyTo('COPY (SELECT id, name FROM trace_items ORDER BY id) TO STDOUT')), sink);
  try { await c.query('SELECT 1 / 0'); } catch (e) { if (e.code !== '22012') throw e; }
  await c.query("SELECT 'still alive' AS status");
  for (const q of ['SELECT * FROM iasql_version()', 'SELECT * FROM iasql_modules_list()',
                   "SELECT * FROM iasql_install('aws_s3')", 'SELECT count(*) AS buckets FROM bucket']) {
    await c.query(q);
  }
  const t = new Promise((r) => setTimeout(r, CANCEL_AFTER)).then(() => rawCancel(c.processID, c.secretKey));
  try { await c.query('SELECT pg_sleep(30)'); } catch (e) { if (e.code !== '57014') throw e; }
  await t;
  await c.query("SELECT 'still alive' AS status");
  await c.end();
}

main().catch((e) => { console.error(e); process.exit(1); });

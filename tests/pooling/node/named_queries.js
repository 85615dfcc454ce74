// node-postgres named queries through transaction pooling (tests/pooling/test_client_stress.py).
// Usage: node named_queries.js <port> <database> <clients> <statements>
// Each client runs <statements> queries: named queries ({name, text, values}, prepared once per
// connection by node-postgres and reused by name), every 10th pair in a transaction, checking
// each result. Prints "RESULT ok=<n> errors=<n>" and the first error messages.
const { Client } = require('pg');

async function run(port, database, id, statements, errors) {
  const client = new Client({ host: '127.0.0.1', port, user: 'postgres', password: 'postgres', database, ssl: false });
  await client.connect();
  let ok = 0;
  try {
    for (let i = 0; i < statements; i += 2) {
      const block = i % 20 === 18;
      try {
        if (block) await client.query('BEGIN');
        const a = await client.query({ name: 'add', text: 'SELECT $1::int + $2::int AS s', values: [i, id] });
        const b = await client.query({ name: `tag${i % 5}`, text: `SELECT $1::text || '-${i % 5}' AS t`, values: [`c${id}`] });
        if (block) await client.query('COMMIT');
        if (a.rows[0].s !== i + id || b.rows[0].t !== `c${id}-${i % 5}`) {
          errors.push(`client ${id} statement ${i}: wrong result ${JSON.stringify([a.rows, b.rows])}`);
        } else {
          ok += 2;
        }
      } catch (e) {
        errors.push(`client ${id} statement ${i}: ${e.code} ${e.message}`);
        if (block) await client.query('ROLLBACK').catch(() => {});
      }
    }
  } finally {
    await client.end();
  }
  return ok;
}

async function main() {
  const [port, database, clients, statements] = process.argv.slice(2);
  const errors = [];
  const oks = await Promise.all([...Array(Number(clients)).keys()].map(
    (id) => run(Number(port), database, id, Number(statements), errors)));
  console.log(`RESULT ok=${oks.reduce((x, y) => x + y, 0)} errors=${errors.length}`);
  for (const e of errors.slice(0, 10)) console.log(e);
}

main().catch((e) => { console.log(`FATAL ${e.stack}`); process.exit(2); });

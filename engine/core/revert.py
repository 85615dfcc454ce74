"""The table half of a failed commit's revert: the user's changes since ``iasql_begin``, undone.

IaSQL reverts a commit that cannot be applied: it turns the audit log since the transaction
opened into inverse SQL (``recreateQueries(..., inverse=true)`` in ``iasql_functions/iasql.ts``),
runs it and applies again, so the tables and the cloud end where they were at ``iasql_begin``.
Here the commit runs inside the caller's transaction, so its own writes roll back with it, and its
cloud changes are taken back from its journal (``engine.core.plan.undo``). What remains are the
user's changes made in earlier, committed transactions since ``iasql_begin``: they are undone by
the one statement ``revert_statement`` builds, which runs after the caller's transaction has
ended (``EngineError.followup``), as the caller.

That statement is a ``DO`` block: it runs with the engine's ``search_path`` (``public, pg_temp``,
every name in it schema-qualified; the caller's own is put back at its end), marks its
transaction as the engine's (``iasql.engine_call``,
so the audit log attributes the inverse changes to ``iasql_engine`` and a later commit does not
take them for the user's), writes ``START_REVERT``, walks the user's INSERT/UPDATE/DELETE audit
rows of the IaSQL transaction newest first and undoes each (an INSERT is deleted by its primary
key, a DELETE re-inserted from its recorded row, an UPDATE set back to its recorded original),
each in its own sub-block; one that fails is tried again after the others (a row deleted by
an ``ON DELETE CASCADE`` is logged before its parent, so it goes back once the parent is back),
pass after pass, and one that still fails when a pass makes no progress is skipped with a NOTICE
(as IaSQL skips a failing inverse query), then writes ``END_REVERT`` (``{"status": "ok", "start_id": <START_REVERT id>}``,
so the next commit's window starts there) and ``CLOSE_TRANSACTION``.
"""

from __future__ import annotations

import json

from psycopg import sql

from engine.core.session import ENGINE_SEARCH_PATH
from engine.schema import ENGINE_GUC, ENGINE_USER

#: Tables whose audit rows are redacted (``engine.schema.REDACTED``) cannot be restored from the
#: audit log and are left out of a revert.
_TEMPLATE = """
DO $iasql_revert$
DECLARE
  _pks pg_catalog.jsonb := {pks};
  _tx pg_catalog.text := {tx};
  _path pg_catalog.text := pg_catalog.current_setting('search_path');
  _open bigint;
  _start bigint;
  _r record;
  _t pg_catalog.text;
  _cond pg_catalog.text;
  _cols pg_catalog.text;
  _todo bigint[];
  _left bigint[];
  _errs pg_catalog.text[];
BEGIN
  -- the engine's search_path (the caller's own is put back at the end)
  PERFORM pg_catalog.set_config('search_path', '{path}', true), pg_catalog.set_config('{guc}', 'on', true);
  SELECT id INTO _open FROM public.iasql_audit_log
   WHERE change_type = 'OPEN_TRANSACTION' AND transaction_id = _tx ORDER BY id DESC LIMIT 1;
  INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, transaction_id)
  VALUES ('{engine}', 'iasql_audit_log', 'START_REVERT', '{{}}', _tx) RETURNING id INTO _start;
  SELECT pg_catalog.array_agg(id) INTO _todo FROM public.iasql_audit_log
   WHERE id > coalesce(_open, _start) AND id < _start AND "user" <> '{engine}'
     AND change_type IN ('INSERT', 'UPDATE', 'DELETE') AND _pks ? table_name;
  -- newest first; what fails is tried again after the rest (a child whose cascaded DELETE was
  -- logged before its parent's goes back once the parent is back), until a pass makes no progress
  WHILE pg_catalog.cardinality(coalesce(_todo, '{{}}')) > 0 LOOP
  _left := '{{}}';
  _errs := '{{}}';
  FOR _r IN SELECT id, table_name, change_type, change FROM public.iasql_audit_log
             WHERE id = ANY(_todo) ORDER BY id DESC LOOP
    _t := _r.table_name;
    SELECT pg_catalog.string_agg(pg_catalog.format(
             '%I IS NOT DISTINCT FROM (pg_catalog.json_populate_record(NULL::public.%I, $1)).%I', c, _t, c), ' AND ')
      INTO _cond FROM pg_catalog.jsonb_array_elements_text(_pks -> _t) AS c;
    BEGIN
      IF _r.change_type = 'INSERT' THEN
        EXECUTE pg_catalog.format('DELETE FROM public.%I WHERE %s', _t, _cond) USING _r.change -> 'change';
      ELSIF _r.change_type = 'DELETE' THEN
        EXECUTE pg_catalog.format('INSERT INTO public.%I SELECT * FROM pg_catalog.json_populate_record('
                                  'NULL::public.%I, $1) ON CONFLICT DO NOTHING', _t, _t) USING _r.change -> 'original';
      ELSE
        SELECT pg_catalog.string_agg(pg_catalog.quote_ident(attname), ', ' ORDER BY attnum) INTO _cols
          FROM pg_catalog.pg_attribute
         WHERE attrelid = pg_catalog.format('public.%I', _t)::pg_catalog.regclass AND attnum > 0 AND NOT attisdropped
           AND attgenerated = '' AND attidentity = '';
        EXECUTE pg_catalog.format('UPDATE public.%I SET (%s) = (SELECT %s FROM pg_catalog.json_populate_record('
                                  'NULL::public.%I, $2)) WHERE %s', _t, _cols, _cols, _t, _cond)
          USING _r.change -> 'change', _r.change -> 'original';
      END IF;
    EXCEPTION WHEN OTHERS THEN
      _left := _left || _r.id;
      _errs := _errs || pg_catalog.format('iasql revert: skipped %s of %s (audit id %s): %s', _r.change_type, _t,
                                          _r.id, SQLERRM);
    END;
  END LOOP;
  IF pg_catalog.cardinality(_left) = pg_catalog.cardinality(_todo) THEN
    FOR _i IN 1 .. pg_catalog.cardinality(_errs) LOOP
      RAISE NOTICE '%', _errs[_i];
    END LOOP;
    EXIT;
  END IF;
  _todo := _left;
  END LOOP;
  INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, transaction_id)
  VALUES ('{engine}', 'iasql_audit_log', 'END_REVERT', pg_catalog.json_build_object('status', 'ok', 'start_id', _start),
          _tx);
  INSERT INTO public.iasql_audit_log ("user", table_name, change_type, change, message, transaction_id)
  VALUES ('{engine}', 'iasql_audit_log', 'CLOSE_TRANSACTION', '{{}}', 'reverted', _tx);
  PERFORM pg_catalog.set_config('search_path', _path, true);
END $iasql_revert$"""


def revert_statement(tx_id: str, tables: dict[str, list[str]]) -> str:
    """The ``DO`` statement that undoes the user's changes to ``tables`` (table -> primary key
    column names) since the IaSQL transaction ``tx_id`` opened, and closes that transaction (see
    the module docstring). Takes only names the engine defines and a transaction id; every value
    is quoted as a literal. Run it as the caller after the caller's transaction has ended; it
    raises nothing for an inverse change that no longer applies (it is skipped with a NOTICE)."""
    pks = sql.Literal(json.dumps(tables, sort_keys=True)).as_string(None) + "::pg_catalog.jsonb"
    tx = sql.Literal(tx_id).as_string(None)
    return _TEMPLATE.format(pks=pks, tx=tx, guc=ENGINE_GUC, engine=ENGINE_USER, path=ENGINE_SEARCH_PATH).strip()


__all__ = ["revert_statement"]

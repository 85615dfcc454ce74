DO $$BEGIN RAISE NOTICE 'hello %', 42; RAISE WARNING 'careful: %', 'warned'; RAISE INFO 'info line'; END$$;
drop table if exists no_such_table_here;
select 'after notices';

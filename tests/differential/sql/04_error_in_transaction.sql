BEGIN;
select 1;
select no_such_column;
select 2;
ROLLBACK;
select 3;

BEGIN;
create temp table tx_t(a int, b text);
insert into tx_t values (1, 'x'), (2, 'y');
update tx_t set b = upper(b) where a = 2;
select sum(a) as total, string_agg(b, ',' order by a) as bs from tx_t;
COMMIT;
select count(*) from tx_t;

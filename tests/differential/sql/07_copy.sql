create temp table copy_t(a int, b text);
COPY copy_t FROM STDIN;
select count(*), sum(a), string_agg(b, '|' order by a) from copy_t;
COPY copy_t TO STDOUT;
COPY (select a * 10, b from copy_t order by a) TO STDOUT WITH (FORMAT csv, HEADER);
COPY diff_fixed TO STDOUT WITH (FORMAT binary);

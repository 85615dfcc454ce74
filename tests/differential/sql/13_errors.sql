selec 1;
select * from no_such_table;
insert into diff_fixed(id, name) values (1, 'duplicate');
select 'x'::int;
select repeat('y', 3);

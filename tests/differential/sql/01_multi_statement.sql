select 1 as one, 'two'::text as two, null::int as nothing;
select 2;
values (1, 'a'), (2, 'b'), (3, null);
select generate_series(1, 5) as n;

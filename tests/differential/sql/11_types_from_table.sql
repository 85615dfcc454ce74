select * from diff_fixed order by id;
select id, name, amount * 2 as doubled, tags[1] as first_tag, created + 1 as next_day from diff_fixed where id > 1 order by id;
select true, false, 1.5::numeric(10,3), 2::int8, 3::int2, 1e300::float8, 'nan'::float4, '\x00ff10'::bytea, '{"a": [1, 2]}'::jsonb, interval '1 day 2 hours', '192.168.0.1/24'::inet, array[[1,2],[3,4]];

select g, md5(g::text), repeat('z', g % 200) from generate_series(1, 3000) g;
select string_agg(md5(g::text), '') from generate_series(1, 2000) g;

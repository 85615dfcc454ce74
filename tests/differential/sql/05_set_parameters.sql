SET application_name = 'changed-by-script';
SHOW application_name;
SET DateStyle = 'German';
select '2020-01-02'::date;
SET TimeZone = 'America/New_York';
select '2020-06-01 12:00:00+00'::timestamptz;
RESET ALL;
SHOW application_name;

select 'before';
select 1/0;
select 'after';

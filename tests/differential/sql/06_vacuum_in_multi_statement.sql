select 'start';
VACUUM diff_fixed;
select 'after vacuum';

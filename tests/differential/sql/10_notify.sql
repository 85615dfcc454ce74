LISTEN diff_channel;
NOTIFY diff_channel, 'first payload';
select pg_notify('diff_channel', 'second payload');
NOTIFY other_channel_nobody_listens;

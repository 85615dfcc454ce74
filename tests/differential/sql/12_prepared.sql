PREPARE p(int, text) AS select $1 + 1, $2 || '!';
EXECUTE p(41, 'hi');
EXECUTE p(0, NULL);
DEALLOCATE p;
EXECUTE p(1, 'gone');

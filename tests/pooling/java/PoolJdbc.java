// Prepared-statement workload for transaction pooling (tests/pooling/test_prepared.py).
// Usage: java -cp postgresql.jar:. PoolJdbc <jdbc-url> <user> <password> <threads> <iterations>
// Each thread opens its own connection and reuses two PreparedStatements <iterations> times
// (pgJDBC's default prepareThreshold = 5 switches to named server statements after 5 uses); every
// 10th iteration runs inside an explicit transaction. Prints one summary line:
//   RESULT ok=<n> errors=<n> missing=<n>
// ("missing" counts errors whose message says a prepared statement does not exist), and the first
// few error messages as "ERROR <thread> <iteration> <sqlstate> <message>".
import java.sql.*;
import java.util.*;
import java.util.concurrent.*;
import java.util.concurrent.atomic.*;

public class PoolJdbc {
    static final AtomicInteger ok = new AtomicInteger(), errors = new AtomicInteger(), missing = new AtomicInteger();
    static final List<String> messages = Collections.synchronizedList(new ArrayList<>());

    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], password = args[2];
        int threads = Integer.parseInt(args[3]), iterations = Integer.parseInt(args[4]);
        ExecutorService pool = Executors.newFixedThreadPool(threads);
        List<Future<?>> done = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
            final int id = t;
            done.add(pool.submit(() -> { run(url, user, password, id, iterations); return null; }));
        }
        for (Future<?> f : done) f.get();
        pool.shutdown();
        System.out.println("RESULT ok=" + ok.get() + " errors=" + errors.get() + " missing=" + missing.get());
        synchronized (messages) { for (String m : messages.subList(0, Math.min(10, messages.size()))) System.out.println(m); }
    }

    static void fail(int id, int i, SQLException e) {
        errors.incrementAndGet();
        String msg = String.valueOf(e.getMessage());
        if (msg.contains("does not exist") && msg.contains("prepared statement")) missing.incrementAndGet();
        messages.add("ERROR " + id + " " + i + " " + e.getSQLState() + " " + msg.replace('\n', ' '));
    }

    static void run(String url, String user, String password, int id, int iterations) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        props.setProperty("sslmode", "disable");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            PreparedStatement add = conn.prepareStatement("SELECT ?::int + ?::int, ?::text");
            PreparedStatement lookup = conn.prepareStatement("SELECT v FROM s1.t WHERE v = ?");
            for (int i = 0; i < iterations; i++) {
                boolean block = i % 10 == 9;
                try {
                    if (block) conn.setAutoCommit(false);
                    add.setInt(1, i);
                    add.setInt(2, id * 1000);
                    add.setString(3, "t" + id);
                    try (ResultSet rs = add.executeQuery()) {
                        rs.next();
                        if (rs.getInt(1) != i + id * 1000 || !rs.getString(2).equals("t" + id))
                            throw new SQLException("wrong result " + rs.getInt(1) + " " + rs.getString(2), "XX000");
                    }
                    lookup.setString(1, "one");
                    try (ResultSet rs = lookup.executeQuery()) {
                        if (!rs.next() || !rs.getString(1).equals("one")) throw new SQLException("lookup failed", "XX000");
                    }
                    if (block) { conn.commit(); conn.setAutoCommit(true); }
                    ok.incrementAndGet();
                } catch (SQLException e) {
                    fail(id, i, e);
                    try { if (!conn.getAutoCommit()) { conn.rollback(); conn.setAutoCommit(true); } } catch (SQLException ignored) { }
                }
            }
        }
    }
}

// The trace scenario driven by pgJDBC (make traces): see python_clients.py for the steps.
// Usage: java -cp postgresql.jar:. TraceJdbc <jdbc-url> <user> <password>
import java.io.StringReader;
import java.io.StringWriter;
import java.sql.*;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class TraceJdbc {
    static void drain(ResultSet rs) throws SQLException { while (rs.next()) { } rs.close(); }

    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            c.setAutoCommit(true);
            try (Statement st = c.createStatement()) {
                st.execute("CREATE TABLE trace_items (id int PRIMARY KEY, name text NOT NULL)");
                // pgJDBC splits a multi-statement string and sends the statements in one pipeline
                boolean rs = st.execute("INSERT INTO trace_items VALUES (1, 'one'), (2, 'two'); "
                        + "SELECT id, name FROM trace_items ORDER BY id; SELECT count(*) AS n FROM trace_items");
                while (true) {
                    if (rs) drain(st.getResultSet());
                    else if (st.getUpdateCount() == -1) break;
                    rs = st.getMoreResults();
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT id, name FROM trace_items WHERE id = ? AND name <> ?")) {
                ps.setInt(1, 2);
                ps.setString(2, "zzz");
                drain(ps.executeQuery());
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int + ?::int AS sum, ?::text AS label")) {
                ps.setInt(1, 40);
                ps.setInt(2, 2);
                ps.setString(3, "answer");
                drain(ps.executeQuery());
            }
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            cm.copyIn("COPY trace_items (id, name) FROM STDIN", new StringReader("3\tthree\n4\tfour\n"));
            cm.copyOut("COPY (SELECT id, name FROM trace_items ORDER BY id) TO STDOUT", new StringWriter());
            try (Statement st = c.createStatement()) {
                try { st.executeQuery("SELECT 1 / 0"); } catch (SQLException e) {
                    if (!"22012".equals(e.getSQLState())) throw e;
                }
                drain(st.executeQuery("SELECT 'still alive' AS status"));
                for (String q : new String[] {"SELECT * FROM iasql_version()", "SELECT * FROM iasql_modules_list()",
                        "SELECT * FROM iasql_install('aws_s3')", "SELECT count(*) AS buckets FROM bucket"}) {
                    drain(st.executeQuery(q));
                }
            }
            try (Statement st = c.createStatement()) {
                Thread t = new Thread(() -> {
                    try { Thread.sleep(1000); st.cancel(); } catch (Exception e) { throw new RuntimeException(e); }
                });
                t.start();
                try { st.executeQuery("SELECT pg_sleep(30)"); } catch (SQLException e) {
                    if (!"57014".equals(e.getSQLState())) throw e;
                }
                t.join();
                drain(st.executeQuery("SELECT 'still alive' AS status"));
            }
        }
    }
}

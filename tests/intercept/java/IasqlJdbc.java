// Drives pgJDBC through iasql-proxy: a PreparedStatement that calls iasql_modules_list() with a
// bind parameter, executed 6 times (prepareThreshold = 5: from the 5th execution pgJDBC uses a
// named server-side statement), a plain Statement, and an error followed by recovery.
// Usage: java -cp postgresql.jar:. IasqlJdbc <jdbc-url> <user> <password>
// Prints one line per result row: "<run>|<col1>|<col2>|..."; errors as "ERR|<sqlstate>|<message>".
import java.sql.*;

public class IasqlJdbc {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            c.setAutoCommit(true);
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT * FROM iasql_modules_list() WHERE module_name = ?")) {
                for (int i = 1; i <= 6; i++) {
                    ps.setString(1, i % 2 == 1 ? "aws_s3" : "aws_iam");
                    try (ResultSet rs = ps.executeQuery()) {
                        ResultSetMetaData md = rs.getMetaData();
                        while (rs.next()) {
                            StringBuilder sb = new StringBuilder("run" + i);
                            for (int k = 1; k <= md.getColumnCount(); k++) {
                                sb.append('|').append(md.getColumnName(k)).append('=').append(rs.getString(k));
                            }
                            System.out.println(sb);
                        }
                    }
                }
            }
            // named server-side statements pgJDBC created (S_1, S_2, ...) once the threshold was reached
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(
                    "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'S\\_%'")) {
                while (rs.next()) System.out.println("named|" + rs.getInt(1));
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT * FROM iasql_version()")) {
                while (rs.next()) System.out.println("version|" + rs.getString(1));
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT * FROM iasql_install(?)")) {
                ps.setString(1, "no_such_module");
                ps.executeQuery();
                System.out.println("no error");
            } catch (SQLException e) {
                System.out.println("ERR|" + e.getSQLState() + "|" + e.getMessage().split("\n")[0]);
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT 40 + 2")) {
                while (rs.next()) System.out.println("after|" + rs.getInt(1));
            }
        }
    }
}

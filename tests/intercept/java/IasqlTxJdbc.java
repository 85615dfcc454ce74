// pgJDBC with autoCommit=false (its default for many frameworks) through iasql-proxy: an iasql_*
// call inside the driver's transaction, the next statement in it, then commit or rollback; and
// VARIADIC with a text[] bound by setArray (sent in binary once prepareThreshold is reached).
// Usage: java -cp postgresql.jar:. IasqlTxJdbc <jdbc-url> <user> <password> <commit|rollback>
// Prints "installed|<module>|<table>" per row, "count|<n>" (iam_role rows seen in the same
// transaction), "done|<commit|rollback>", "variadic|<run>|<module>|<table>" and errors as
// "ERR|<sqlstate>|<message>".
import java.sql.*;

public class IasqlTxJdbc {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], args[1], args[2])) {
            c.setAutoCommit(false);
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT module_name, created_table_name FROM iasql_install('aws_iam')")) {
                while (rs.next()) System.out.println("installed|" + rs.getString(1) + "|" + rs.getString(2));
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM iam_role")) {
                while (rs.next()) System.out.println("count|" + rs.getInt(1));
            }
            if (args[3].equals("commit")) c.commit(); else c.rollback();
            System.out.println("done|" + args[3]);
            // VARIADIC ? with a text[] parameter, several times (binary transfer after the threshold)
            for (int run = 1; run <= 3; run++) {
                try (PreparedStatement ps = c.prepareStatement(
                        "SELECT module_name, created_table_name FROM iasql_install(VARIADIC ?)")) {
                    ps.setArray(1, c.createArrayOf("text", new String[] {"aws_account"}));
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) System.out.println("variadic|" + run + "|" + rs.getString(1) + "|" + rs.getString(2));
                    }
                    ParameterMetaData md = ps.getParameterMetaData();
                    System.out.println("paramtype|" + run + "|" + md.getParameterTypeName(1));
                } catch (SQLException e) {
                    System.out.println("ERR|" + e.getSQLState() + "|" + e.getMessage().split("\n")[0]);
                }
                c.rollback();
            }
        }
    }
}

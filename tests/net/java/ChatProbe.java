import java.io.*;
import java.net.*;
import java.security.KeyStore;
import javax.net.ssl.*;

/**
 * A Java 17 client for the tests: connects with a PKCS#12 keystore and truststore, sends one
 * line, reads one, and prints "OK protocol suite line" or "ERROR exception".
 * Usage: ChatProbe HOST PORT KEYSTORE TRUSTSTORE PASSWORD [TLSv1.2|TLSv1.3]
 */
public class ChatProbe {
    public static void main(String[] a) throws Exception {
        String host = a[0]; int port = Integer.parseInt(a[1]);
        char[] pw = a[4].toCharArray();
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(a[2])) { ks.load(in, pw); }
        KeyStore ts = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(a[3])) { ts.load(in, pw); }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance("PKIX");
        kmf.init(ks, pw);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance("PKIX");
        tmf.init(ts);
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        try (SSLSocket s = (SSLSocket) ctx.getSocketFactory().createSocket(host, port)) {
            if (a.length > 5) s.setEnabledProtocols(new String[] {a[5]});
            s.startHandshake();
            OutputStream out = s.getOutputStream();
            out.write("/who\n".getBytes("UTF-8"));
            out.flush();
            BufferedReader r = new BufferedReader(new InputStreamReader(s.getInputStream(), "UTF-8"));
            System.out.println("OK " + s.getSession().getProtocol() + " " + s.getSession().getCipherSuite() + " " + r.readLine());
        } catch (Exception e) {
            System.out.println("ERROR " + e);
        }
    }
}

// Drives keysafe's KMS gateway with Hadoop's own client classes (KMSClientProvider,
// LoadBalancingKMSClientProvider, KeyProviderCryptoExtension, delegation tokens, proxy users).
// Compiled and run by crates/keysafe-kms/tests/it/hadoop.rs:
//
//   javac -cp "$HADOOP_CLIENT_LIB/*" -d OUT KmsHarness.java
//   java -cp "$HADOOP_CLIENT_LIB/*:OUT" KmsHarness <scenario> <provider URI> [args...]
//
// Each scenario prints "OK <what>" lines and exits 0, or prints the failure and exits 1.
//
// Kerberos: with -Dkms.kerberos=true the client runs with hadoop.security.authentication=kerberos
// (and -Djava.security.krb5.conf=...); with -Dkms.principal=P -Dkms.keytab=FILE it first logs in
// from the keytab (UserGroupInformation.loginUserFromKeytab), as a Hadoop service does.

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.PrintStream;
import java.net.URI;
import java.security.PrivilegedExceptionAction;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.crypto.key.KeyProvider;
import org.apache.hadoop.crypto.key.KeyProvider.KeyVersion;
import org.apache.hadoop.crypto.key.KeyProviderCryptoExtension;
import org.apache.hadoop.crypto.key.KeyProviderCryptoExtension.EncryptedKeyVersion;
import org.apache.hadoop.crypto.key.KeyProviderDelegationTokenExtension;
import org.apache.hadoop.crypto.key.KeyProviderFactory;
import org.apache.hadoop.security.Credentials;
import org.apache.hadoop.security.UserGroupInformation;
import org.apache.hadoop.security.token.Token;
import org.apache.hadoop.util.ToolRunner;

public class KmsHarness {
    static Configuration conf() {
        Configuration c = new Configuration();
        c.set("hadoop.security.crypto.codec.classes.aes.ctr.nopadding",
              "org.apache.hadoop.crypto.JceAesCtrCryptoCodec");
        c.setInt("hadoop.security.kms.client.encrypted.key.cache.size", 10);
        if (Boolean.getBoolean("kms.kerberos")) {
            c.set("hadoop.security.authentication", "kerberos");
        }
        return c;
    }

    static void login() throws Exception {
        if (!Boolean.getBoolean("kms.kerberos")) return;
        UserGroupInformation.setConfiguration(conf());
        String keytab = System.getProperty("kms.keytab");
        if (keytab != null) {
            UserGroupInformation.loginUserFromKeytab(System.getProperty("kms.principal"), keytab);
            ok("logged in from the keytab as " + UserGroupInformation.getLoginUser().getUserName()
               + " (" + UserGroupInformation.getLoginUser().getAuthenticationMethod() + ")");
        }
    }

    static KeyProvider provider(String uri) throws Exception {
        KeyProvider p = KeyProviderFactory.get(new URI(uri), conf());
        if (p == null) throw new IllegalStateException("no provider for " + uri);
        return p;
    }

    static KeyProvider.Options opts(int bits) {
        KeyProvider.Options o = KeyProvider.options(conf());
        o.setBitLength(bits);
        o.setCipher("AES/CTR/NoPadding");
        return o;
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError("FAILED: " + what);
    }

    static void ok(String what) {
        System.out.println("OK " + what);
    }

    public static void main(String[] args) throws Exception {
        try {
            login();
            switch (args[0]) {
                case "keyshell": keyshell(args[1], args[2]); break;
                case "dt-save": dtSave(args[1], args[2]); break;
                case "dt-use": dtUse(args[1], args[2], args[3]); break;
                case "refused": refused(args[1], args[2]); break;
                case "eek": eek(args[1], args[2]); break;
                case "dt": dt(args[1], args[2]); break;
                case "doas": doas(args[1]); break;
                case "denied": denied(args[1], args[2], args[3]); break;
                case "lb": lb(args[1], args[2], args[3], args[4]); break;
                default: throw new IllegalArgumentException("unknown scenario " + args[0]);
            }
        } catch (Throwable t) {
            System.out.println("EXCEPTION " + t.getClass().getName() + ": " + t.getMessage());
            t.printStackTrace(System.out);
            System.exit(1);
        }
        System.exit(0);
    }

    /** Runs KeyShell (as `hadoop key` does) in this JVM, returning its exit code and output. */
    static String[] shell(String uri, String... args) throws Exception {
        org.apache.hadoop.crypto.key.KeyShell ks = new org.apache.hadoop.crypto.key.KeyShell();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ks.setOut(new PrintStream(out, true));
        ks.setErr(new PrintStream(out, true));
        String[] full = Arrays.copyOf(args, args.length + 2);
        full[args.length] = "-provider";
        full[args.length + 1] = uri;
        int rc = ToolRunner.run(conf(), ks, full);
        return new String[] { Integer.toString(rc), out.toString() };
    }

    /** KeyShell create / list / roll / delete. */
    static void keyshell(String uri, String key) throws Exception {
        String[] r = shell(uri, "create", key, "-size", "256", "-description", "made over kerberos");
        check(r[0].equals("0") && r[1].contains(key + " has been successfully created"), "create: " + r[1]);
        ok("keyshell create");
        r = shell(uri, "list", "-metadata");
        check(r[0].equals("0") && r[1].contains(key + " : cipher: AES/CTR/NoPadding, length: 256"), "list: " + r[1]);
        ok("keyshell list");
        r = shell(uri, "roll", key);
        check(r[0].equals("0") && r[1].contains(key + " has been successfully rolled"), "roll: " + r[1]);
        r = shell(uri, "list", "-metadata");
        check(r[1].contains("version: 2"), "two versions after the roll: " + r[1]);
        ok("keyshell roll");
        r = shell(uri, "delete", key, "-f");
        check(r[0].equals("0") && r[1].contains(key + " has been successfully deleted"), "delete: " + r[1]);
        r = shell(uri, "list");
        check(r[0].equals("0") && !r[1].contains(key), "gone: " + r[1]);
        ok("keyshell delete");
    }

    /** Gets a delegation token (renewer yarn) and writes it to a token file, as a job client does. */
    static void dtSave(String uri, String file) throws Exception {
        KeyProvider kms = provider(uri);
        Credentials creds = new Credentials();
        Token<?>[] toks = KeyProviderDelegationTokenExtension
            .createKeyProviderDelegationTokenExtension(kms).addDelegationTokens("yarn", creds);
        check(toks != null && toks.length == 1, "one token");
        creds.writeTokenStorageFile(new org.apache.hadoop.fs.Path(new File(file).toURI()), conf());
        ok("saved token " + toks[0].getKind() + " for " + toks[0].getService());
    }

    /** A process with no Kerberos ticket uses only the token file (as a YARN task does). */
    static void dtUse(String uri, String file, String key) throws Exception {
        Credentials creds = Credentials.readTokenStorageFile(
            new org.apache.hadoop.fs.Path(new File(file).toURI()), conf());
        UserGroupInformation task = UserGroupInformation.createRemoteUser("task");
        task.addCredentials(creds);
        List<String> names = task.doAs((PrivilegedExceptionAction<List<String>>) () -> {
            KeyProvider p = provider(uri);
            KeyProviderCryptoExtension kp = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(p);
            EncryptedKeyVersion e = kp.generateEncryptedKey(key);
            check(kp.decryptEncryptedKey(e).getMaterial().length > 0, "decrypted");
            return p.getKeys();
        });
        check(names.contains(key), "listed " + names);
        ok("token used without a ticket");
        // The same process without the token gets nothing.
        UserGroupInformation none = UserGroupInformation.createRemoteUser("task2");
        try {
            none.doAs((PrivilegedExceptionAction<List<String>>) () -> provider(uri).getKeys());
        } catch (Exception ex) {
            ok("without the token: refused (" + ex.getClass().getSimpleName() + ")");
            return;
        }
        throw new AssertionError("FAILED: a caller without ticket or token must be refused");
    }

    /** A Kerberos client without a ticket is refused and reads no key material. */
    static void refused(String uri, String key) throws Exception {
        try {
            KeyProvider p = provider(uri);
            KeyVersion v = p.getCurrentKey(key);
            throw new AssertionError("FAILED: got " + (v == null ? "null" : v.getVersionName()));
        } catch (java.io.IOException | RuntimeException ex) {
            Throwable t = ex;
            StringBuilder all = new StringBuilder();
            while (t != null) { all.append(t.getClass().getName()).append(": ").append(t.getMessage()).append(" | "); t = t.getCause(); }
            ok("refused: " + all);
        }
    }

    /** generate / decrypt (checked against Hadoop's DefaultCryptoExtension) / re-encrypt / batch. */
    static void eek(String uri, String key) throws Exception {
        KeyProvider kms = provider(uri);
        kms.createKey(key, opts(256));
        KeyProviderCryptoExtension kp = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(kms);

        // The reference: Hadoop's own DefaultCryptoExtension over a user:/// provider holding the
        // same material, fetched from the gateway.
        KeyVersion cur = kms.getCurrentKey(key);
        check(cur.getMaterial().length == 32, "material is 256 bits");
        KeyProvider user = provider("user:///");
        user.createKey(key, cur.getMaterial(), opts(256));
        KeyProviderCryptoExtension ref = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(user);

        List<EncryptedKeyVersion> ekvs = new ArrayList<>();
        List<byte[]> deks = new ArrayList<>();
        for (int i = 0; i < 25; i++) {  // more than the client cache (10): refills from the gateway
            EncryptedKeyVersion ekv = kp.generateEncryptedKey(key);
            check(ekv.getEncryptionKeyVersionName().equals(key + "@0"), "version " + ekv.getEncryptionKeyVersionName());
            check(ekv.getEncryptedKeyVersion().getVersionName().equals("EEK"), "EEK version name");
            KeyVersion dek = kp.decryptEncryptedKey(ekv);
            check(dek.getVersionName().equals("EK"), "EK version name");
            check(dek.getMaterial().length == 32, "DEK length = key length");
            KeyVersion refDek = ref.decryptEncryptedKey(ekv);
            check(Arrays.equals(dek.getMaterial(), refDek.getMaterial()),
                  "gateway decrypt equals DefaultCryptoExtension decrypt");
            ekvs.add(ekv);
            deks.add(dek.getMaterial());
        }
        ok("generate+decrypt x25 match DefaultCryptoExtension");

        // Our own generate, checked the other way: EEKs made by the reference decrypt at the gateway.
        EncryptedKeyVersion mine = ref.generateEncryptedKey(key);
        check(Arrays.equals(kp.decryptEncryptedKey(mine).getMaterial(), ref.decryptEncryptedKey(mine).getMaterial()),
              "reference EEK decrypts at the gateway");
        ok("reference EEK decrypts at gateway");

        kms.rollNewVersion(key);
        kp.invalidateCache(key);
        EncryptedKeyVersion re = kp.reencryptEncryptedKey(ekvs.get(0));
        check(re.getEncryptionKeyVersionName().equals(key + "@1"), "re-encrypted under @1: " + re.getEncryptionKeyVersionName());
        check(Arrays.equals(re.getEncryptedKeyIv(), ekvs.get(0).getEncryptedKeyIv()), "same IV");
        check(Arrays.equals(kp.decryptEncryptedKey(re).getMaterial(), deks.get(0)), "same DEK after re-encrypt");
        ok("reencrypt");

        List<EncryptedKeyVersion> batch = new ArrayList<>(ekvs.subList(0, 5));
        kp.reencryptEncryptedKeys(batch);
        check(batch.size() == 5, "batch size kept");
        for (int i = 0; i < 5; i++) {
            check(batch.get(i).getEncryptionKeyVersionName().equals(key + "@1"), "batch item under @1");
            check(Arrays.equals(kp.decryptEncryptedKey(batch.get(i)).getMaterial(), deks.get(i)), "batch DEK " + i);
        }
        ok("reencrypt batch");

        EncryptedKeyVersion after = kp.generateEncryptedKey(key);
        check(after.getEncryptionKeyVersionName().equals(key + "@1"), "new EEKs under @1 after roll");
        ok("generate after roll");
    }

    /** Delegation tokens: get as the current user, use as another user, renew, cancel. */
    static void dt(String uri, String key) throws Exception {
        final Configuration conf = conf();
        KeyProvider kms = provider(uri);
        KeyProviderDelegationTokenExtension ext =
            KeyProviderDelegationTokenExtension.createKeyProviderDelegationTokenExtension(kms);
        Credentials creds = new Credentials();
        Token<?>[] toks = ext.addDelegationTokens("yarn", creds);
        check(toks != null && toks.length == 1, "one token");
        final Token<?> tok = toks[0];
        check(tok.getKind().toString().equals("kms-dt"), "kind kms-dt: " + tok.getKind());
        ok("got token " + tok.getKind() + " service=" + tok.getService());

        // "bob" holds only the token: the gateway must see the token's owner.
        UserGroupInformation bob = UserGroupInformation.createRemoteUser("bob");
        bob.addCredentials(creds);
        List<String> names = bob.doAs((PrivilegedExceptionAction<List<String>>) () -> {
            KeyProvider p = provider(uri);
            KeyProviderCryptoExtension kp = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(p);
            EncryptedKeyVersion e = kp.generateEncryptedKey(key);
            kp.decryptEncryptedKey(e);
            return p.getKeys();
        });
        check(names.contains(key), "bob (by token) lists " + names);
        ok("token used by a second user");

        long exp = UserGroupInformation.createRemoteUser("yarn").doAs(
            (PrivilegedExceptionAction<Long>) () -> tok.renew(conf));
        check(exp > System.currentTimeMillis(), "renewed expiry in the future");
        ok("renewed by yarn until " + exp);

        boolean refused = false;
        try {
            UserGroupInformation.createRemoteUser("mallory").doAs(
                (PrivilegedExceptionAction<Long>) () -> tok.renew(conf));
        } catch (Exception e) {
            refused = true;
        }
        check(refused, "renew by a non-renewer is refused");
        ok("renew by non-renewer refused");

        tok.cancel(conf);
        ok("cancelled");
    }

    /** doAs: a proxy user acting for alice. */
    static void doas(String uri) throws Exception {
        UserGroupInformation real = UserGroupInformation.createRemoteUser("oozie");
        UserGroupInformation alice = UserGroupInformation.createProxyUser("alice", real);
        alice.doAs((PrivilegedExceptionAction<Void>) () -> {
            KeyProvider p = provider(uri);
            p.createKey("made-by-alice", opts(128));
            check(p.getKeys().contains("made-by-alice"), "listed");
            return null;
        });
        ok("doAs alice");
        UserGroupInformation bob = UserGroupInformation.createProxyUser("bob", real);
        try {
            bob.doAs((PrivilegedExceptionAction<Void>) () -> {
                provider(uri).getKeys();
                return null;
            });
        } catch (Exception e) {
            Throwable t = e;
            // Hadoop's filter refuses the impersonation already on the OPTIONS handshake (which
            // carries doAs), so the client reports a failed authentication with the 403.
            while (t != null && !(t instanceof org.apache.hadoop.security.authorize.AuthorizationException)
                   && !(t instanceof org.apache.hadoop.security.authentication.client.AuthenticationException)) t = t.getCause();
            check(t != null, "AuthorizationException or AuthenticationException expected, got " + e);
            ok("doAs bob refused: " + t.getClass().getSimpleName() + ": " + t.getMessage());
            return;
        }
        throw new AssertionError("FAILED: impersonating bob must be refused");
    }

    /** An ACL denial through the LB provider: AuthorizationException at once (403, no failover). */
    static void denied(String lbUri, String uriA, String key) throws Exception {
        EncryptedKeyVersion e = UserGroupInformation.createRemoteUser("root").doAs(
            (PrivilegedExceptionAction<EncryptedKeyVersion>) () -> {
                KeyProvider a = provider(uriA);
                a.createKey(key, opts(128));
                return KeyProviderCryptoExtension.createKeyProviderCryptoExtension(a).generateEncryptedKey(key);
            });
        KeyProviderCryptoExtension kp = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(provider(lbUri));
        try {
            kp.decryptEncryptedKey(e);
        } catch (Exception ex) {
            check(ex instanceof org.apache.hadoop.security.authorize.AuthorizationException,
                  "AuthorizationException expected, got " + ex);
            ok("denied: " + ex.getMessage());
            return;
        }
        throw new AssertionError("FAILED: decrypt must be denied");
    }

    /** Load balancing over two gateways, and keys made through one used through the other. */
    static void lb(String lbUri, String uriA, String uriB, String key) throws Exception {
        KeyProvider lb = provider(lbUri);
        check(lb.getClass().getSimpleName().equals("LoadBalancingKMSClientProvider"), "LB provider: " + lb.getClass());
        KeyProvider a = provider(uriA);
        KeyProvider b = provider(uriB);
        a.createKey(key, opts(128));
        KeyProviderCryptoExtension ka = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(a);
        KeyProviderCryptoExtension kb = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(b);
        KeyProviderCryptoExtension klb = KeyProviderCryptoExtension.createKeyProviderCryptoExtension(lb);
        EncryptedKeyVersion e = kb.generateEncryptedKey(key);
        check(Arrays.equals(ka.decryptEncryptedKey(e).getMaterial(), kb.decryptEncryptedKey(e).getMaterial()),
              "created at A, generated at B, decrypted at both");
        ok("created through one gateway, used through the other");
        for (int i = 0; i < 8; i++) {
            EncryptedKeyVersion x = klb.generateEncryptedKey(key);
            klb.decryptEncryptedKey(x);
            lb.getMetadata(key);
        }
        ok("load-balanced calls");
        KeyVersion rolled = lb.rollNewVersion(key);
        check(rolled.getVersionName().equals(key + "@1"), "rolled to @1");
        // The LB client broadcast _invalidatecache to both gateways: both see @1 now.
        check(a.getCurrentKey(key).getVersionName().equals(key + "@1"), "A sees the roll");
        check(b.getCurrentKey(key).getVersionName().equals(key + "@1"), "B sees the roll");
        check(b.getMetadata(key).getVersions() == 2, "B metadata has 2 versions");
        ok("rollover through the LB seen by both gateways");
        // A token obtained through the LB provider works at both gateways.
        Credentials creds = new Credentials();
        KeyProviderDelegationTokenExtension.createKeyProviderDelegationTokenExtension(lb)
            .addDelegationTokens("yarn", creds);
        UserGroupInformation bob = UserGroupInformation.createRemoteUser("bob");
        bob.addCredentials(creds);
        bob.doAs((PrivilegedExceptionAction<Void>) () -> {
            KeyProvider p = provider(lbUri);
            for (int i = 0; i < 4; i++) p.getMetadata(key);
            return null;
        });
        ok("LB token honoured by both gateways");
        lb.deleteKey(key);
        check(a.getMetadata(key) == null && b.getMetadata(key) == null, "deleted everywhere");
        ok("delete through the LB");
    }
}

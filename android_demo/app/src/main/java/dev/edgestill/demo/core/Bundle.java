package dev.edgestill.demo.core;

import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeMap;

/**
 * An edgestill bundle folder as the app sees it: manifest.json read and checked against the
 * files, the same checks (and messages) as the Python runtime's Bundle.open (runtime/bundle.py).
 *
 * <p>Refuses, with a {@link BundleException} whose message says what to do: a missing folder, a
 * folder without manifest.json, a manifest of another format or format_version (this app reads
 * "edgestill-bundle" version 1), no genai_config.json, a listed file missing or of another size,
 * and (when asked to verify) of another sha256. The layout is in docs/contracts.md.
 */
public final class Bundle {
    public static final String FORMAT = "edgestill-bundle";
    public static final long FORMAT_VERSION = 1;

    public final File dir;
    public final Map<String, Object> manifest;
    /** sha256 of manifest.json's bytes (the record's bundle_sha256). */
    public final String manifestSha256;

    /** A bundle this app cannot run; the message is one line for the screen and the record. */
    public static final class BundleException extends Exception {
        private static final long serialVersionUID = 1L;

        /** The bundle as far as it could be read (its manifest parsed), else null; for the record. */
        public final Bundle partial;

        public BundleException(String message) {
            this(message, null);
        }

        public BundleException(String message, Bundle partial) {
            super(message);
            this.partial = partial;
        }
    }

    private Bundle(File dir, Map<String, Object> manifest, String manifestSha256) {
        this.dir = dir;
        this.manifest = manifest;
        this.manifestSha256 = manifestSha256;
    }

    private static String redo(File dir) {
        return "re-export it with `edgestill export RECIPE` and copy the whole folder again (adb push "
                + dir.getName() + ")";
    }

    /** Opens and checks `dir`; with `verify`, also hashes every listed file (sha256). */
    public static Bundle open(File dir, boolean verify) throws BundleException {
        Map<String, Object> manifest;
        byte[] raw;
        File file = new File(dir, "manifest.json");
        if (!dir.isDirectory()) {
            String hint = dir.getPath().startsWith("/data/local/tmp")
                    ? " (apps cannot read /data/local/tmp on recent Android: push to "
                    + "/sdcard/Android/data/dev.edgestill.demo/files/bundles/ instead)" : "";
            throw new BundleException("bundle " + dir + ": no such folder" + hint + "; copy a bundle to the phone "
                    + "first (adb push build/NAME/bundle-int8 /sdcard/Android/data/dev.edgestill.demo/files/bundles/) "
                    + "or pick one with Open bundle");
        }
        if (!file.isFile()) {
            throw new BundleException("bundle " + dir + ": no manifest.json (not a bundle, or a copy that did "
                    + "not finish); " + redo(dir));
        }
        try {
            raw = readAll(file);
            Object parsed = Json.parse(new String(raw, StandardCharsets.UTF_8));
            if (!(parsed instanceof Map)) throw new Json.ParseError("not a JSON object");
            manifest = castMap(parsed);
        } catch (IOException | Json.ParseError e) {
            throw new BundleException("bundle " + dir + ": manifest.json is not valid JSON (" + e.getMessage()
                    + "); " + redo(dir));
        }
        Bundle bundle = new Bundle(dir, manifest, hex(digest(raw)));
        try {
            checkFormat(dir, manifest);
            bundle.checkFiles(verify);
        } catch (BundleException e) {
            throw new BundleException(e.getMessage(), bundle);
        }
        return bundle;
    }

    /** Refuses a manifest of another format or format_version, naming both versions. */
    public static void checkFormat(File dir, Map<String, Object> manifest) throws BundleException {
        Object format = manifest.get("format");
        Object version = manifest.get("format_version");
        boolean versionOk = version instanceof Long && (Long) version == FORMAT_VERSION;
        if (!FORMAT.equals(format) || !versionOk) {
            throw new BundleException("bundle " + dir + ": manifest.json has format " + show(format)
                    + " version " + show(version) + ", this app reads '" + FORMAT + "' version " + FORMAT_VERSION
                    + "; re-export it with the edgestill version this app was built with, or update the app");
        }
        for (String key : new String[] {"model", "tokens", "prompt", "files"}) {
            if (!(manifest.get(key) instanceof Map)) {
                throw new BundleException("bundle " + dir + ": manifest.json has no '" + key + "' section; "
                        + redo(dir));
            }
        }
    }

    private static String show(Object value) {
        return value instanceof String ? "'" + value + "'" : String.valueOf(value);
    }

    private void checkFiles(boolean verify) throws BundleException {
        if (!new File(dir, "genai_config.json").isFile()) {
            throw new BundleException("bundle " + dir + ": file genai_config.json is missing (onnxruntime-genai "
                    + "needs it); " + redo(dir));
        }
        for (Map.Entry<String, Object> e : new TreeMap<>(files()).entrySet()) {
            Map<String, Object> meta = castMap(e.getValue());
            File f = new File(dir, e.getKey());
            if (!f.isFile()) {
                throw new BundleException("bundle " + dir + ": file " + e.getKey() + " is missing; " + redo(dir));
            }
            Object bytes = meta.get("bytes");
            if (!(bytes instanceof Long) || f.length() != (Long) bytes) {
                throw new BundleException("bundle " + dir + ": file " + e.getKey() + " has " + f.length()
                        + " bytes, the manifest says " + bytes + "; it is damaged or from another export; "
                        + redo(dir));
            }
            if (verify && !hashFile(f).equals(meta.get("sha256"))) {
                throw new BundleException("bundle " + dir + ": file " + e.getKey() + " does not match its sha256 "
                        + "in manifest.json; it is damaged or from another export; " + redo(dir));
            }
        }
    }

    private Map<String, Object> files() {
        return castMap(manifest.get("files"));
    }

    /** The manifest's name, else the folder's name. */
    public String name() {
        Object name = manifest.get("name");
        return name instanceof String && !((String) name).isEmpty() ? (String) name : dir.getName();
    }

    /** Sum of the bytes of every file the manifest lists (the record's file_bytes). */
    public long fileBytes() {
        long total = 0;
        for (Object meta : files().values()) {
            Object bytes = castMap(meta).get("bytes");
            if (bytes instanceof Long) total += (Long) bytes;
        }
        return total;
    }

    /** manifest.model[key] as a long, or `fallback`. */
    public long modelLong(String key, long fallback) {
        Object v = castMap(manifest.get("model")).get(key);
        return v instanceof Long ? (Long) v : fallback;
    }

    /** The manifest's quality figures (numbers and booleans only), for the record's quality. */
    public Map<String, Object> quality() {
        Map<String, Object> out = new LinkedHashMap<>();
        Object q = manifest.get("quality");
        if (q instanceof Map) {
            for (Map.Entry<String, Object> e : castMap(q).entrySet()) {
                Object v = e.getValue();
                if (v == null || v instanceof Number || v instanceof Boolean) out.put(e.getKey(), v);
            }
        }
        return out;
    }

    /**
     * The chat prompt for one user message, as runtime.Bundle.format_prompt builds it:
     * instruction + "\n\n" + text (just text with no instruction) put where {user} is in
     * manifest.prompt.template (plain replace: templates may hold braces).
     */
    public String formatPrompt(String text) {
        Map<String, Object> prompt = castMap(manifest.get("prompt"));
        Object instruction = prompt.get("instruction");
        String user = instruction instanceof String && !((String) instruction).isEmpty()
                ? instruction + "\n\n" + text : text;
        Object template = prompt.get("template");
        return template instanceof String ? ((String) template).replace("{user}", user) : user;
    }

    @SuppressWarnings("unchecked")
    static Map<String, Object> castMap(Object o) {
        return o instanceof Map ? (Map<String, Object>) o : new LinkedHashMap<>();
    }

    /** Every byte of a file (java.nio.file needs API 26; the app's minSdk is 24). */
    public static byte[] readAll(File f) throws IOException {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        byte[] buf = new byte[1 << 16];
        try (InputStream in = new FileInputStream(f)) {
            for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
        }
        return out.toByteArray();
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is part of every Java platform", e);
        }
    }

    private static byte[] digest(byte[] raw) {
        return sha256().digest(raw);
    }

    /** sha256 of a file, lower-case hex, read in 1 MiB blocks. */
    public static String hashFile(File f) throws BundleException {
        MessageDigest md = sha256();
        byte[] buf = new byte[1 << 20];
        try (InputStream in = new FileInputStream(f)) {
            for (int n; (n = in.read(buf)) > 0; ) md.update(buf, 0, n);
        } catch (IOException e) {
            throw new BundleException("bundle file " + f + " cannot be read (" + e.getMessage() + ")");
        }
        return hex(md.digest());
    }

    static String hex(byte[] bytes) {
        StringBuilder out = new StringBuilder();
        for (byte b : bytes) out.append(String.format("%02x", b & 0xff));
        return out.toString();
    }
}

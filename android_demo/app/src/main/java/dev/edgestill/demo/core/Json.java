package dev.edgestill.demo.core;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A small JSON reader and writer for the app's pure-Java core (no Android imports).
 *
 * <p>Why our own: the core must compile and run with a bare JDK (javac in CI, no jars), and
 * Android's org.json is not on a desktop JVM. It reads objects as LinkedHashMap (key order kept),
 * arrays as ArrayList, integers as Long, other numbers as Double. It writes Map, List, String,
 * Number, Boolean and null; NaN and infinities are written as null (JSON cannot hold them).
 *
 * <p>Tested by tests/android/test_core.py (round trips, escaping, malformed input).
 */
public final class Json {
    private final String text;
    private int pos;

    private Json(String text) {
        this.text = text;
    }

    /** Thrown for text that is not JSON; the message names the character offset. */
    public static final class ParseError extends Exception {
        private static final long serialVersionUID = 1L;

        ParseError(String message) {
            super(message);
        }
    }

    /** Parses one JSON value (with nothing but whitespace after it). */
    public static Object parse(String text) throws ParseError {
        Json reader = new Json(text);
        Object value = reader.value();
        reader.skipSpace();
        if (reader.pos != text.length()) {
            throw reader.error("unexpected text after the JSON value");
        }
        return value;
    }

    private ParseError error(String what) {
        return new ParseError(what + " at character " + pos);
    }

    private void skipSpace() {
        while (pos < text.length() && " \t\r\n".indexOf(text.charAt(pos)) >= 0) {
            pos++;
        }
    }

    private Object value() throws ParseError {
        skipSpace();
        if (pos >= text.length()) {
            throw error("unexpected end of text");
        }
        char c = text.charAt(pos);
        if (c == '{') return object();
        if (c == '[') return array();
        if (c == '"') return string();
        if (c == '-' || (c >= '0' && c <= '9')) return number();
        if (text.startsWith("true", pos)) { pos += 4; return Boolean.TRUE; }
        if (text.startsWith("false", pos)) { pos += 5; return Boolean.FALSE; }
        if (text.startsWith("null", pos)) { pos += 4; return null; }
        throw error("unexpected character '" + c + "'");
    }

    private Map<String, Object> object() throws ParseError {
        Map<String, Object> out = new LinkedHashMap<>();
        pos++;
        skipSpace();
        if (pos < text.length() && text.charAt(pos) == '}') { pos++; return out; }
        while (true) {
            skipSpace();
            if (pos >= text.length() || text.charAt(pos) != '"') throw error("expected a quoted key");
            String key = string();
            skipSpace();
            expect(':');
            out.put(key, value());
            skipSpace();
            if (pos < text.length() && text.charAt(pos) == ',') { pos++; continue; }
            expect('}');
            return out;
        }
    }

    private List<Object> array() throws ParseError {
        List<Object> out = new ArrayList<>();
        pos++;
        skipSpace();
        if (pos < text.length() && text.charAt(pos) == ']') { pos++; return out; }
        while (true) {
            out.add(value());
            skipSpace();
            if (pos < text.length() && text.charAt(pos) == ',') { pos++; continue; }
            expect(']');
            return out;
        }
    }

    private void expect(char c) throws ParseError {
        if (pos >= text.length() || text.charAt(pos) != c) throw error("expected '" + c + "'");
        pos++;
    }

    private String string() throws ParseError {
        StringBuilder out = new StringBuilder();
        pos++;
        while (pos < text.length()) {
            char c = text.charAt(pos++);
            if (c == '"') return out.toString();
            if (c < 0x20) throw error("control character in a string");
            if (c != '\\') { out.append(c); continue; }
            if (pos >= text.length()) break;
            char e = text.charAt(pos++);
            switch (e) {
                case '"': case '\\': case '/': out.append(e); break;
                case 'b': out.append('\b'); break;
                case 'f': out.append('\f'); break;
                case 'n': out.append('\n'); break;
                case 'r': out.append('\r'); break;
                case 't': out.append('\t'); break;
                case 'u': out.append(hex4()); break;
                default: throw error("bad escape \\" + e);
            }
        }
        throw error("unterminated string");
    }

    private char hex4() throws ParseError {
        if (pos + 4 > text.length()) throw error("short \\u escape");
        try {
            char c = (char) Integer.parseInt(text.substring(pos, pos + 4), 16);
            pos += 4;
            return c;
        } catch (NumberFormatException e) {
            throw error("bad \\u escape");
        }
    }

    private Object number() throws ParseError {
        int start = pos;
        if (text.charAt(pos) == '-') pos++;
        boolean integral = true;
        while (pos < text.length()) {
            char c = text.charAt(pos);
            if (c >= '0' && c <= '9') { pos++; continue; }
            if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') { integral = false; pos++; continue; }
            break;
        }
        String s = text.substring(start, pos);
        try {
            if (integral) {
                try {
                    return Long.parseLong(s);
                } catch (NumberFormatException tooBig) {
                    return new BigDecimal(s).doubleValue();
                }
            }
            return Double.parseDouble(s);
        } catch (NumberFormatException e) {
            throw error("bad number '" + s + "'");
        }
    }

    /** Writes a value as JSON, indented by `indent` spaces per level (0 = one line). */
    public static String write(Object value, int indent) {
        StringBuilder out = new StringBuilder();
        write(out, value, indent, 0);
        return out.toString();
    }

    private static void write(StringBuilder out, Object value, int indent, int depth) {
        if (value == null) {
            out.append("null");
        } else if (value instanceof String) {
            quote(out, (String) value);
        } else if (value instanceof Boolean) {
            out.append(value.toString());
        } else if (value instanceof Double || value instanceof Float) {
            double d = ((Number) value).doubleValue();
            out.append(Double.isNaN(d) || Double.isInfinite(d) ? "null" : Double.toString(d));
        } else if (value instanceof Number) {
            out.append(value.toString());
        } else if (value instanceof Map) {
            writeObject(out, (Map<?, ?>) value, indent, depth);
        } else if (value instanceof List) {
            writeArray(out, (List<?>) value, indent, depth);
        } else if (value instanceof int[]) {
            List<Object> list = new ArrayList<>();
            for (int i : (int[]) value) list.add(i);
            writeArray(out, list, indent, depth);
        } else {
            quote(out, value.toString());
        }
    }

    private static void writeObject(StringBuilder out, Map<?, ?> map, int indent, int depth) {
        if (map.isEmpty()) { out.append("{}"); return; }
        out.append('{');
        boolean first = true;
        for (Map.Entry<?, ?> e : map.entrySet()) {
            if (!first) out.append(',');
            first = false;
            newline(out, indent, depth + 1);
            quote(out, String.valueOf(e.getKey()));
            out.append(indent > 0 ? ": " : ":");
            write(out, e.getValue(), indent, depth + 1);
        }
        newline(out, indent, depth);
        out.append('}');
    }

    private static void writeArray(StringBuilder out, List<?> list, int indent, int depth) {
        if (list.isEmpty()) { out.append("[]"); return; }
        out.append('[');
        for (int i = 0; i < list.size(); i++) {
            if (i > 0) out.append(',');
            newline(out, indent, depth + 1);
            write(out, list.get(i), indent, depth + 1);
        }
        newline(out, indent, depth);
        out.append(']');
    }

    private static void newline(StringBuilder out, int indent, int depth) {
        if (indent <= 0) return;
        out.append('\n');
        for (int i = 0; i < indent * depth; i++) out.append(' ');
    }

    /** Appends `s` as a JSON string: quotes, backslashes and control characters escaped. */
    public static void quote(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                default:
                    if (c < 0x20 || c == '\u2028' || c == '\u2029') {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }

    /** A JSON string literal for `s`. */
    public static String quote(String s) {
        StringBuilder out = new StringBuilder();
        quote(out, s);
        return out.toString();
    }
}

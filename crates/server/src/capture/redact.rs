//! The one place that decides what of a device's request may be written down. Everything
//! the traffic record keeps (database rows, capture files) and every log line that prints
//! a query goes through here, so a secret has one gate to pass, not one per writer.
//!
//! The rule errs towards hiding: a field whose *name* looks secret loses its value
//! whatever the value is, `Bearer ...` loses its token wherever it shows, and a body that
//! cannot be parsed well enough to find its fields is not kept at all.

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Whether a form field, query parameter or JSON key names a secret: the OAuth fields of
/// c2c-api.md §2 (`client_secret`, `device_code`, `refresh_token` and its misspelling
/// `refresh_tokem`, `token`), access tokens in socket queries (`Authorization=Bearer ..`,
/// `token=`), URL signatures (`sig`, S3's `X-Amz-Signature`), and anything else whose
/// name says token, secret, password or signature. Names are compared without case, `_`
/// or `-`, so `deviceCode`, `device-code` and `Client_Secret` are the fields they look like.
pub fn is_secret_name(name: &str) -> bool {
    let name: String = name
        .trim()
        .chars()
        .filter(|c| !matches!(c, '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    const EXACT: &[&str] = &["sig", "code"];
    const CONTAINS: &[&str] = &[
        "token",
        "tokem",
        "secret",
        "password",
        "passwd",
        "signature",
        "authorization",
        "credential",
        "cookie",
        "session",
        "apikey",
        "devicecode",
    ];
    EXACT.contains(&name.as_str()) || CONTAINS.iter().any(|c| name.contains(c))
}

/// Whether a header's value is a secret whatever it holds.
fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || is_secret_name(&name)
}

/// Header bytes (names and values) a record keeps: a device may send up to the server's
/// header limit, which is not worth a database row.
pub const HEADER_BYTES: usize = 8 * 1024;

/// Headers as `(name, value)` pairs, in order, secrets replaced; values that are not
/// text are shown lossily. Past [`HEADER_BYTES`] the rest are left out and a last pair
/// `("[truncated]", "N more headers")` says so.
pub fn headers(map: &axum::http::HeaderMap) -> Vec<(String, String)> {
    let mut kept = Vec::new();
    let mut bytes = 0;
    for (index, (name, value)) in map.iter().enumerate() {
        let name = name.as_str().to_owned();
        let value = if is_secret_header(&name) {
            REDACTED.to_owned()
        } else {
            scrub(&String::from_utf8_lossy(value.as_bytes()))
        };
        bytes += name.len() + value.len();
        if bytes > HEADER_BYTES {
            let left = map.len() - index;
            kept.push(("[truncated]".to_owned(), format!("{left} more headers")));
            break;
        }
        kept.push((name, value));
    }
    kept
}

/// A query string (`a=1&sig=..`) with the values of secret parameters replaced. Names
/// are compared percent-decoded; everything else is kept as sent.
pub fn query(raw: &str) -> String {
    form_text(raw)
}

/// A request path, with anything that looks like a bearer token scrubbed (paths carry no
/// secrets in the contract, but a device may put one there).
pub fn path(raw: &str) -> String {
    scrub(raw)
}

/// Replaces `Bearer <token>` (any case, `%20` or `+` for the space) with
/// `Bearer [redacted]`, and the value of any `name=value` or `name: value` whose name is
/// secret, in any text (a JSON string or a part holding a form, a header, an error detail).
pub fn scrub(text: &str) -> String {
    scrub_pairs(&scrub_bearer(text))
}

/// The value after a secret name and `=` or `:` (the name and the value optionally
/// quoted) replaced, up to its closing quote or the next separator.
fn scrub_pairs(text: &str) -> String {
    let bytes = text.as_bytes();
    let name_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'%');
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        if !matches!(bytes[i], b'=' | b':') {
            i += 1;
            continue;
        }
        let mut name_end = i;
        while name_end > 0 && bytes[name_end - 1] == b' ' {
            name_end -= 1;
        }
        if name_end > 0 && matches!(bytes[name_end - 1], b'"' | b'\'') {
            name_end -= 1;
        }
        let mut name_start = name_end;
        while name_start > 0 && name_byte(bytes[name_start - 1]) {
            name_start -= 1;
        }
        let name = &text[name_start..name_end];
        if name.is_empty() || !is_secret_name(&percent_decode(name)) {
            i += 1;
            continue;
        }
        let mut start = i + 1;
        while start < bytes.len() && bytes[start] == b' ' {
            start += 1;
        }
        let quote = bytes
            .get(start)
            .copied()
            .filter(|b| matches!(b, b'"' | b'\''));
        if quote.is_some() {
            start += 1;
        }
        let end = bytes[start..]
            .iter()
            .position(|&b| match quote {
                Some(q) => b == q,
                None => {
                    b.is_ascii_whitespace()
                        || matches!(b, b'&' | b';' | b',' | b'"' | b'\'' | b'}' | b']' | b')')
                }
            })
            .map_or(bytes.len(), |n| start + n);
        if end > start && &text[start..end] != REDACTED {
            out.push_str(&text[copied..start]);
            out.push_str(REDACTED);
            copied = end;
        }
        i = end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    out
}

fn scrub_bearer(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(found) = lower[i..].find("bearer") {
        let start = i + found;
        let after = start + "bearer".len();
        let sep = [" ", "%20", "+", "\t"]
            .iter()
            .find(|s| lower[after..].starts_with(**s))
            .map_or(0, |s| s.len());
        if sep == 0 {
            out.push_str(&text[i..after]);
            i = after;
            continue;
        }
        let mut token_start = after + sep;
        while text[token_start..].starts_with(' ') {
            token_start += 1;
        }
        let token_end = text[token_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '&' | '"' | ',' | ';' | '\''))
            .map_or(text.len(), |n| token_start + n);
        out.push_str(&text[i..token_start]);
        if token_end > token_start {
            out.push_str(REDACTED);
        }
        i = token_end;
    }
    out.push_str(&text[i..]);
    out
}

/// How a body is to be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyRule {
    /// The body went on past the bytes given (a JSON body cut short is scanned by key).
    pub truncated: bool,
    /// Keep field names only, never a value: the OAuth endpoints (`/v2/auth/*`), where
    /// nearly every value is a credential.
    pub names_only: bool,
}

impl BodyRule {
    /// The rule for a body sent to `path`.
    pub fn for_path(path: &str, truncated: bool) -> BodyRule {
        BodyRule {
            truncated,
            names_only: path.starts_with("/v2/auth/"),
        }
    }
}

/// The first bytes of a request body, as text a person can read, with secrets replaced.
/// Fails closed: a body is kept only if it is JSON (after a BOM and white space; cut-off
/// JSON is scanned by key), a strict urlencoded form (`name=value` pairs joined by `&`,
/// nothing else), or multipart whose boundary was found in it. Anything else, however
/// harmless it looks, becomes a placeholder giving its size: a body the gate cannot walk
/// is a body whose secrets it cannot find.
pub fn body(content_type: Option<&str>, bytes: &[u8], rule: BodyRule) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let content_type = content_type.unwrap_or("").to_ascii_lowercase();
    if content_type.starts_with("multipart/")
        && let Some(b) = boundary(&content_type)
        && let Some(kept) = multipart(bytes, &b, rule.names_only)
    {
        return kept;
    }
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(trimmed) {
        if rule.names_only {
            names_only_json(&mut value);
        } else {
            redact_json(&mut value);
        }
        return serde_json::to_string(&value).unwrap_or_default();
    }
    if rule.truncated
        && !rule.names_only
        && (trimmed.starts_with('{') || trimmed.starts_with('['))
        && json_tokens_only(trimmed)
    {
        return json_scan(trimmed);
    }
    if let Some(kept) = strict_form(trimmed, rule.names_only) {
        return kept;
    }
    format!(
        "[{} bytes, not recognised as JSON, a form or multipart]",
        bytes.len()
    )
}

/// `a=1&b=2` with secret fields' values replaced (query strings).
fn form_text(raw: &str) -> String {
    raw.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if is_secret_name(&percent_decode(name)) => {
                format!("{name}={REDACTED}")
            }
            Some((name, value)) => format!("{name}={}", scrub(value)),
            None if is_secret_name(&percent_decode(pair)) => pair.to_owned(),
            None => scrub(pair),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A urlencoded body, only if every piece is a `name=value` pair of the characters a form
/// encoder emits (a newline, a space or a bare name is not a form and could hide a field).
fn strict_form(text: &str, names_only: bool) -> Option<String> {
    fn name_ok(c: char) -> bool {
        c.is_ascii_alphanumeric()
            || matches!(c, '-' | '_' | '.' | '~' | '*' | '%' | '+' | '[' | ']')
    }
    // What a form encoder leaves unescaped; anything else (`;`, `,`, a space) could be a
    // separator the server does not know of.
    fn value_ok(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '*' | '%' | '+')
    }
    let mut out = Vec::new();
    for pair in text.split('&') {
        let (name, value) = pair.split_once('=')?;
        if name.is_empty() || !name.chars().all(name_ok) || !value.chars().all(value_ok) {
            return None;
        }
        let secret = names_only || is_secret_name(&percent_decode(name));
        out.push(if secret {
            format!("{name}={REDACTED}")
        } else {
            format!("{name}={}", scrub(value))
        });
    }
    Some(out.join("&"))
}

/// Every value that is not an object or array replaced: the keys stay.
fn names_only_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => map.values_mut().for_each(names_only_json),
        serde_json::Value::Array(items) => items.iter_mut().for_each(names_only_json),
        other => *other = serde_json::Value::String(REDACTED.to_owned()),
    }
}

fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_secret_name(key) {
                    *v = serde_json::Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::String(s) => {
            let clean = scrub(s);
            if clean != *s {
                *s = clean;
            }
        }
        _ => {}
    }
}

/// Tolerant pass over JSON that does not parse: every string literal that is a secret
/// key has the value after its `:` replaced (a string up to its closing quote, or a bare
/// value up to `,`/`}`/`]`), or everything after it when the text ends first.
fn json_scan(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let end = string_end(bytes, i);
        let key = &text[i + 1..end.min(text.len()).max(i + 1)];
        let mut j = end + 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        // A key with escapes cannot be judged by its text: treated as secret.
        if j < bytes.len() && bytes[j] == b':' && (key.contains('\\') || is_secret_name(key)) {
            j += 1;
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            let value_end = if j < bytes.len() && bytes[j] == b'"' {
                (string_end(bytes, j) + 1).min(bytes.len())
            } else {
                bytes[j..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']'))
                    .map_or(bytes.len(), |n| j + n)
            };
            out.push_str(&scrub(&text[copied..j]));
            out.push('"');
            out.push_str(REDACTED);
            out.push('"');
            copied = value_end;
            i = value_end;
        } else {
            i = end + 1;
        }
    }
    if copied < text.len() {
        out.push_str(&scrub(&text[copied..]));
    }
    out
}

/// Whether text outside string literals is only what JSON is made of (structure, numbers,
/// `true`/`false`/`null`, possibly cut short): cut-off text that is not JSON is not
/// scanned as if it were.
fn json_tokens_only(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'"' {
            i = string_end(bytes, i) + 1;
        } else if b.is_ascii_alphabetic() {
            let end = bytes[i..]
                .iter()
                .position(|c| !c.is_ascii_alphabetic())
                .map_or(bytes.len(), |n| i + n);
            let word = &text[i..end];
            let cut = end == bytes.len();
            let literal = ["true", "false", "null"]
                .iter()
                .any(|l| *l == word || (cut && l.starts_with(word)))
                || (word == "e" || word == "E");
            if !literal {
                return false;
            }
            i = end;
        } else if b.is_ascii_digit() || b" \t\r\n{}[],:-+.".contains(&b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Index of the quote closing the string that opens at `open` (or the text's length).
fn string_end(bytes: &[u8], open: usize) -> usize {
    let mut k = open + 1;
    while k < bytes.len() {
        match bytes[k] {
            b'\\' => k += 2,
            b'"' => return k,
            _ => k += 1,
        }
    }
    bytes.len()
}

/// The `boundary` parameter of a multipart content type.
fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|param| {
        let (name, value) = param.trim().split_once('=')?;
        (name.trim() == "boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// A multipart body with each secret part's content replaced (also when the body is cut
/// off inside it); `None` when the boundary does not occur in it (then the parts cannot
/// be told apart). Text before the first delimiter and after the last is not kept.
fn multipart(bytes: &[u8], boundary: &str, names_only: bool) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let delimiter = format!("--{boundary}");
    let lower = text.to_ascii_lowercase();
    let delimiter_lower = delimiter.to_ascii_lowercase();
    let mut pieces = Vec::new();
    let mut at = lower.find(&delimiter_lower)? + delimiter.len();
    while let Some(n) = lower[at..].find(&delimiter_lower) {
        pieces.push((at, at + n));
        at += n + delimiter.len();
    }
    pieces.push((at, text.len()));
    let mut out = String::with_capacity(text.len());
    for (start, end) in pieces {
        out.push_str(&delimiter);
        let part = &text[start..end];
        if part.starts_with("--") {
            // The closing delimiter: what follows it is an epilogue, not a part.
            out.push_str("--");
            break;
        }
        out.push_str(&multipart_part(part, names_only));
    }
    Some(out)
}

/// One part (its headers, a blank line, its content): the content goes if the part's
/// name is secret or missing, if only names are kept, or if its headers are cut off
/// before the name could be read.
fn multipart_part(part: &str, names_only: bool) -> String {
    let head_end = part
        .find("\r\n\r\n")
        .map(|n| (n, n + 4))
        .or_else(|| part.find("\n\n").map(|n| (n, n + 2)));
    let Some((head_len, content_start)) = head_end else {
        // Cut off in its headers: a name cut short cannot be judged, so only the complete
        // header lines stay.
        if part.trim().is_empty() {
            return part.to_owned();
        }
        return format!("{}{REDACTED}", part_header_prefix(part));
    };
    let head = &part[..head_len];
    match part_name(head) {
        Some(name) if !names_only && !is_secret_name(&name) => scrub(part),
        _ => {
            let tail = if part.ends_with("\r\n") { "\r\n" } else { "" };
            format!("{}{REDACTED}{tail}", scrub(&part[..content_start]))
        }
    }
}

/// The headers of a part cut off before its blank line, up to the last complete line.
fn part_header_prefix(part: &str) -> &str {
    part.rfind('\n').map_or("", |n| &part[..=n])
}

/// The `name` of a part's `Content-Disposition`.
fn part_name(head: &str) -> Option<String> {
    let lower = head.to_ascii_lowercase();
    let at = lower.find("name=")?;
    // `filename=` also contains `name=`; the first `name=` preceded by `;` or space is it.
    let mut search = 0;
    let mut found = None;
    while let Some(n) = lower[search..].find("name=") {
        let pos = search + n;
        let before = lower[..pos].chars().last();
        if matches!(before, Some(';' | ' ' | '\t')) {
            found = Some(pos);
            break;
        }
        search = pos + 5;
    }
    let pos = found.unwrap_or(at) + 5;
    let rest = &head[pos..];
    let name = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.split('"').next().unwrap_or("")
    } else {
        rest.split([';', '\r', '\n', ' ']).next().unwrap_or("")
    };
    Some(name.to_owned())
}

/// `%XX` and `+` decoded (lossily to text).
pub(crate) fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| Some(hex(*bytes.get(i + 1)?)? << 4 | hex(*bytes.get(i + 2)?)?))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, b) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    const SECRET: &str = "s3cr3tvalue0123456789";
    const WHOLE: BodyRule = BodyRule {
        truncated: false,
        names_only: false,
    };
    const CUT: BodyRule = BodyRule {
        truncated: true,
        names_only: false,
    };
    const AUTH: BodyRule = BodyRule {
        truncated: false,
        names_only: true,
    };

    fn placeholder(text: &str) -> bool {
        text.ends_with("bytes, not recognised as JSON, a form or multipart]")
    }

    fn multipart_form(boundary: &str) -> String {
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\ncam-1\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\n{SECRET}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"device_code\"\r\n\r\n{SECRET}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"refresh_token\"\r\n\r\n{SECRET}\r\n--{boundary}--\r\n"
        )
    }

    #[test]
    fn multipart_whose_boundary_is_not_found_is_not_kept() {
        let form = multipart_form("RealBoundary");
        for ct in [
            Some("multipart/form-data; boundary=OtherBoundary"),
            None,
            Some("application/x-www-form-urlencoded"),
            Some("text/plain"),
        ] {
            for rule in [WHOLE, CUT, AUTH] {
                let clean = body(ct, form.as_bytes(), rule);
                assert_clean(&clean);
                assert!(placeholder(&clean), "{ct:?}: {clean}");
            }
        }
        // The real boundary: kept, secrets gone, preamble and epilogue dropped.
        let wrapped = format!("{SECRET}\r\n{form}client_secret={SECRET}");
        let clean = body(
            Some("multipart/form-data; boundary=RealBoundary"),
            wrapped.as_bytes(),
            WHOLE,
        );
        assert_clean(&clean);
        assert!(clean.contains("cam-1"), "{clean}");
        // A part without a name loses its content.
        let nameless = format!("--B\r\nContent-Type: text/plain\r\n\r\n{SECRET}\r\n--B--");
        assert_clean(&body(
            Some("multipart/form-data; boundary=B"),
            nameless.as_bytes(),
            WHOLE,
        ));
    }

    #[test]
    fn only_strict_forms_are_kept() {
        for text in [
            format!("client_id=a\nclient_secret={SECRET}"),
            format!("client_id=a\r\nclient_secret={SECRET}"),
            format!("client_id=a client_secret={SECRET}"),
            SECRET.to_owned(),
            format!("client_id=a&{SECRET}"),
            format!("client_id=a;client_secret={SECRET}"),
            format!("client_id=a,client_secret={SECRET}"),
        ] {
            for ct in [Some("application/x-www-form-urlencoded"), None] {
                let clean = body(ct, text.as_bytes(), WHOLE);
                assert_clean(&clean);
                assert!(placeholder(&clean), "{text:?}: {clean}");
            }
        }
        let clean = body(None, b"client_id=cam-1&scope=asset_create+offline", WHOLE);
        assert_eq!(clean, "client_id=cam-1&scope=asset_create+offline");
    }

    #[test]
    fn json_with_a_bom_or_camel_case_keys_loses_its_secrets() {
        let json = format!(
            "\u{feff}{{\"clientId\":\"cam-1\",\"deviceCode\":\"{SECRET}\",\"clientSecret\":\"{SECRET}\",\"refreshToken\":\"{SECRET}\",\"accessToken\":\"{SECRET}\",\"Device-Code\":\"{SECRET}\"}}"
        );
        for rule in [WHOLE, CUT] {
            let clean = body(Some("application/json"), json.as_bytes(), rule);
            assert_clean(&clean);
            assert!(clean.contains("cam-1"), "{clean}");
        }
        let cut = &json[..json.len() - 3];
        let clean = body(None, cut.as_bytes(), CUT);
        assert_clean(&clean);
        // Not JSON and not cut short: not kept.
        let clean = body(None, cut.as_bytes(), WHOLE);
        assert!(placeholder(&clean), "{clean}");
        // An escaped key in cut-off JSON cannot be judged by its text.
        let escaped = format!("{{\"client\\u005fsecret\":\"{SECRET}\",\"x\":\"");
        assert_clean(&body(None, escaped.as_bytes(), CUT));
        for name in [
            "deviceCode",
            "device-code",
            "Client_Secret",
            "refresh_tokem",
            "refreshToken",
            "accessToken",
            "X-Amz-Signature",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        assert!(!is_secret_name("client_id") && !is_secret_name("grant_type"));
    }

    #[test]
    fn secret_pairs_inside_kept_text_lose_their_values() {
        for text in [
            format!("client_secret={SECRET}"),
            format!("see clientSecret: {SECRET}, then"),
            format!("{{'refresh_token': '{SECRET}'}}"),
            format!("\"deviceCode\" : \"{SECRET}\""),
            format!("x=1;token={SECRET};y=2"),
        ] {
            let clean = scrub(&text);
            assert_clean(&clean);
            assert!(clean.contains(REDACTED), "{clean}");
        }
        assert_eq!(scrub("at 12:30, size=5"), "at 12:30, size=5");
        // In a JSON string, and in a multipart part's content.
        let json = format!(r#"{{"note":"client_secret={SECRET}"}}"#);
        assert_clean(&body(None, json.as_bytes(), WHOLE));
        let part = format!(
            "--B\r\nContent-Disposition: form-data; name=\"payload\"\r\n\r\nclient_id=a\ndevice_code={SECRET}\r\n--B--"
        );
        assert_clean(&body(
            Some("multipart/form-data; boundary=B"),
            part.as_bytes(),
            WHOLE,
        ));
        // Cut-off text that only starts like JSON is not scanned as JSON.
        let fake = format!("{{client_secret {SECRET} and more");
        let clean = body(None, fake.as_bytes(), CUT);
        assert!(placeholder(&clean), "{clean}");
        assert!(json_tokens_only(r#"{"a": [1, -2.5e3, true, nul"#));
        assert!(!json_tokens_only(r#"{"a": 1, secret"#));
    }

    #[test]
    fn auth_bodies_keep_field_names_only() {
        let clean = body(
            None,
            b"grant_type=refresh_token&client_id=cam-1&scope=x",
            AUTH,
        );
        assert_eq!(
            clean,
            "grant_type=[redacted]&client_id=[redacted]&scope=[redacted]"
        );
        let clean = body(
            None,
            br#"{"client_id":"cam-1","nested":{"a":[1,"b"]}}"#,
            AUTH,
        );
        assert!(
            !clean.contains("cam-1") && clean.contains("nested"),
            "{clean}"
        );
        let form = multipart_form("B");
        let clean = body(
            Some("multipart/form-data; boundary=B"),
            form.as_bytes(),
            AUTH,
        );
        assert!(
            !clean.contains("cam-1") && clean.contains("client_id"),
            "{clean}"
        );
        assert_eq!(BodyRule::for_path("/v2/auth/token", false), AUTH);
        assert!(!BodyRule::for_path("/v2/devices/assets", false).names_only);
    }

    fn assert_clean(text: &str) {
        assert!(!text.contains(SECRET), "a secret survived: {text}");
    }

    #[test]
    fn queries_lose_secret_values_only() {
        let q = format!("size=5&expires=9&sig={SECRET}");
        assert_eq!(query(&q), "size=5&expires=9&sig=[redacted]");
        for q in [
            format!("Authorization=Bearer%20{SECRET}&vsn=2.0.0"),
            format!("Authorization=Bearer+{SECRET}"),
            format!("token={SECRET}"),
            format!("refresh_tokem={SECRET}"),
            format!("X-Amz-Signature={SECRET}&partNumber=1"),
            format!("client%5Fsecret={SECRET}"),
            format!("vsn=2.0.0&x=Bearer%20{SECRET}"),
        ] {
            let clean = query(&q);
            assert_clean(&clean);
            assert!(clean.contains(REDACTED), "{clean}");
        }
        assert_eq!(query("vsn=2.0.0&a"), "vsn=2.0.0&a");
    }

    #[test]
    fn form_bodies_lose_secret_fields() {
        let form = format!(
            "grant_type=refresh_token&client_id=cam-1&client_secret={SECRET}&refresh_token={SECRET}&device_code={SECRET}"
        );
        let clean = body(
            Some("application/x-www-form-urlencoded"),
            form.as_bytes(),
            WHOLE,
        );
        assert_clean(&clean);
        assert!(clean.contains("client_id=cam-1"));
        assert!(clean.contains("grant_type=refresh_token"));
        // Cut off in the middle of a secret value: still hidden.
        let cut = &form[..form.len() - 5];
        assert!(!body(None, cut.as_bytes(), CUT).contains(&SECRET[..SECRET.len() - 5]));
    }

    #[test]
    fn json_bodies_lose_secret_keys_at_any_depth() {
        let json = format!(
            r#"{{"name":"A001.mov","auth":{{"access_token":"{SECRET}"}},"list":[{{"Token":"{SECRET}"}}],"note":"Bearer {SECRET}"}}"#
        );
        let clean = body(Some("application/json"), json.as_bytes(), WHOLE);
        assert_clean(&clean);
        assert!(clean.contains("A001.mov"));
        // Without a content type, and cut off inside the secret.
        let cut = format!(r#"{{"name":"x", "refresh_token" : "{SECRET}"#);
        let clean = body(None, cut.as_bytes(), CUT);
        assert_clean(&clean);
        assert!(clean.contains(r#""name":"x""#), "{clean}");
        let cut = format!(r#"{{"filesize":1,"client_secret":"{SECRET}","offset":3,"x":"#);
        let clean = body(Some("text/plain"), cut.as_bytes(), CUT);
        assert_clean(&clean);
        assert!(clean.contains(r#""offset":3"#), "{clean}");
    }

    #[test]
    fn multipart_bodies_lose_secret_parts() {
        let ct = "multipart/form-data; boundary=XyZ";
        let form = format!(
            "--XyZ\r\nContent-Disposition: form-data; name=\"client_id\"\r\n\r\ncam-1\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"client_secret\"\r\n\r\n{SECRET}\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"scope\"\r\n\r\nasset_create offline\r\n--XyZ--\r\n"
        );
        let clean = body(Some(ct), form.as_bytes(), WHOLE);
        assert_clean(&clean);
        assert!(
            clean.contains("cam-1") && clean.contains("asset_create offline"),
            "{clean}"
        );
        // Cut off in the secret's content, and in a part's headers.
        let cut = &form[..form.find(SECRET).unwrap() + 4];
        assert!(!body(Some(ct), cut.as_bytes(), CUT).contains(&SECRET[..4]));
        let at_header = form.find("name=\"client_secret\"").unwrap() + 8;
        let clean = body(Some(ct), &form.as_bytes()[..at_header], CUT);
        assert!(!clean.contains("client_se"), "{clean}");
        // No boundary: nothing kept.
        assert_clean(&body(Some("multipart/form-data"), form.as_bytes(), WHOLE));
    }

    #[test]
    fn headers_lose_credentials() {
        let mut map = HeaderMap::new();
        map.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {SECRET}")).unwrap(),
        );
        map.insert(
            "cookie",
            HeaderValue::from_str(&format!("rushes_session={SECRET}")).unwrap(),
        );
        map.insert("x-client-version", HeaderValue::from_static("1.2.3"));
        map.insert("x-api-token", HeaderValue::from_str(SECRET).unwrap());
        map.insert(
            "x-forwarded-authz",
            HeaderValue::from_str(&format!("bearer {SECRET}")).unwrap(),
        );
        let clean = headers(&map);
        for (_, v) in &clean {
            assert_clean(v);
        }
        assert!(clean.contains(&("x-client-version".into(), "1.2.3".into())));
        assert!(clean.contains(&("authorization".into(), REDACTED.into())));
    }

    #[test]
    fn headers_are_kept_up_to_their_byte_cap() {
        let mut map = HeaderMap::new();
        let big = "v".repeat(1000);
        for i in 0..20 {
            map.insert(
                axum::http::HeaderName::from_bytes(format!("x-h{i:02}").as_bytes()).unwrap(),
                HeaderValue::from_str(&big).unwrap(),
            );
        }
        let kept = headers(&map);
        let bytes: usize = kept.iter().map(|(n, v)| n.len() + v.len()).sum();
        assert!(bytes <= HEADER_BYTES + 100, "{bytes}");
        assert_eq!(kept.len(), 9, "{kept:?}");
        assert_eq!(kept[8], ("[truncated]".into(), "12 more headers".into()));
    }

    #[test]
    fn scrub_finds_bearer_tokens_anywhere() {
        assert_eq!(scrub(&format!("Bearer {SECRET}")), "Bearer [redacted]");
        assert_eq!(
            scrub(&format!("x BEARER%20{SECRET}&y=1")),
            "x BEARER%20[redacted]&y=1"
        );
        assert_eq!(scrub("bearers are fine"), "bearers are fine");
        assert_eq!(scrub("Bearer"), "Bearer");
        assert_eq!(path("/v2/devices/me"), "/v2/devices/me");
    }
}

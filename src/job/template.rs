//! `{{var}}` and `{{var | default: "x"}}` placeholders in title, body and subtitle.
//!
//! Syntax: `{{` name `}}` or `{{` name `|` `default` `:` quoted `}}`, with
//! any whitespace between the parts. A name is an ASCII letter or `_`
//! followed by letters, digits, `_`, `-` or `.`; the default is quoted with
//! `"` or `'` and may hold anything but its own quote. A variable that is
//! absent or empty renders as its default, else as nothing. Text with no
//! `{{` is returned as is, without allocating.

use std::borrow::Cow;
use std::collections::BTreeMap;

/// One parsed placeholder.
struct Placeholder<'a> {
    name: &'a str,
    default: Option<&'a str>,
    /// Bytes from the start of the text after `{{` to just past `}}`.
    len: usize,
}

/// Where the first `{{` starts. Called for every text of every recipient:
/// a byte search for `{` (memchr) instead of a substring searcher, which
/// costs its setup on each call even for texts without a brace.
fn find_open(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find('{') {
        let at = from + i;
        if text.as_bytes().get(at + 1) == Some(&b'{') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Renders `tpl` with `vars`. Malformed placeholders (which [`check`]
/// refuses) are copied as they are.
pub fn render<'a>(tpl: &'a str, vars: &BTreeMap<String, String>) -> Cow<'a, str> {
    let Some(first) = find_open(tpl) else {
        return Cow::Borrowed(tpl);
    };
    let mut out = String::with_capacity(tpl.len() + 16);
    out.push_str(&tpl[..first]);
    let mut rest = &tpl[first..];
    while let Some(at) = find_open(rest) {
        out.push_str(&rest[..at]);
        let inner = &rest[at + 2..];
        match parse(inner) {
            Ok(p) => {
                let value = vars
                    .get(p.name)
                    .map(String::as_str)
                    .filter(|v| !v.is_empty())
                    .or(p.default)
                    .unwrap_or("");
                out.push_str(value);
                rest = &inner[p.len..];
            }
            Err(_) => {
                out.push_str("{{");
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Checks that every placeholder of `tpl` is well formed; the message says
/// where the first bad one starts and what is wrong.
pub fn check(tpl: &str) -> Result<(), String> {
    let mut offset = 0;
    while let Some(at) = find_open(&tpl[offset..]) {
        let start = offset + at;
        let inner = &tpl[start + 2..];
        let p = parse(inner).map_err(|e| format!("placeholder at byte {start}: {e}"))?;
        offset = start + 2 + p.len;
    }
    Ok(())
}

/// The variable names `tpl` uses, in order (duplicates kept).
pub fn variables(tpl: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = tpl;
    while let Some(at) = find_open(rest) {
        let inner = &rest[at + 2..];
        match parse(inner) {
            Ok(p) => {
                names.push(p.name);
                rest = &inner[p.len..];
            }
            Err(_) => rest = inner,
        }
    }
    names
}

fn skip_ws(s: &str, i: usize) -> usize {
    i + s[i..].len() - s[i..].trim_start().len()
}

/// Parses what follows `{{` up to and including `}}`.
fn parse(s: &str) -> Result<Placeholder<'_>, String> {
    let start = skip_ws(s, 0);
    if start == s.len() {
        return Err("`{{` is not closed by `}}`".to_owned());
    }
    let name_len = s[start..]
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        .count();
    let name = &s[start..start + name_len];
    match name.bytes().next() {
        None => return Err("expected a variable name after `{{`".to_owned()),
        Some(b) if !(b.is_ascii_alphabetic() || b == b'_') => {
            return Err(format!(
                "variable name {name:?} must start with a letter or `_`"
            ))
        }
        Some(_) => {}
    }
    let mut i = skip_ws(s, start + name_len);
    let mut default = None;
    if s[i..].starts_with('|') {
        i = skip_ws(s, i + 1);
        let Some(after) = s[i..].strip_prefix("default") else {
            return Err("the only filter is `default: \"text\"`".to_owned());
        };
        i = skip_ws(s, s.len() - after.len());
        if !s[i..].starts_with(':') {
            return Err("expected `:` after `default`".to_owned());
        }
        i = skip_ws(s, i + 1);
        let quote = match s[i..].chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => return Err("the default must be quoted with \" or '".to_owned()),
        };
        let body = &s[i + 1..];
        let close = body
            .find(quote)
            .ok_or_else(|| "the default's quote is not closed".to_owned())?;
        default = Some(&body[..close]);
        i = skip_ws(s, i + 1 + close + 1);
    }
    if !s[i..].starts_with("}}") {
        return Err(match s[i..].chars().next() {
            None => "`{{` is not closed by `}}`".to_owned(),
            Some(c) => format!("unexpected {c:?}; expected `}}}}`"),
        });
    }
    Ok(Placeholder {
        name,
        default,
        len: i + 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_text_is_borrowed() {
        let v = vars(&[("name", "Ann")]);
        assert!(matches!(render("Hello there } {", &v), Cow::Borrowed(_)));
        assert!(matches!(render("", &v), Cow::Borrowed(_)));
    }

    #[test]
    fn placeholders_render() {
        let v = vars(&[("name", "Ann"), ("city", ""), ("user.first-name", "Bo")]);
        let cases = [
            ("Hi {{name}}!", "Hi Ann!"),
            ("Hi {{ name }}", "Hi Ann"),
            ("{{name}}{{name}}", "AnnAnn"),
            ("Hi {{missing}}.", "Hi ."),
            ("Hi {{ missing | default: \"friend\" }}", "Hi friend"),
            ("Hi {{missing|default:'friend'}}", "Hi friend"),
            ("Hi {{name | default: \"friend\"}}", "Hi Ann"),
            ("In {{ city | default: \"town\" }}", "In town"),
            ("{{user.first-name}}", "Bo"),
            ("{{ x | default: \"a}}b\" }}", "a}}b"),
            ("{{ x | default: \"it's\" }}", "it's"),
            ("{{ x | default: '' }}", ""),
            ("\u{e9}{{name}}\u{e9}", "\u{e9}Ann\u{e9}"),
            ("{ {x} {{name}}", "{ {x} Ann"),
        ];
        for (tpl, want) in cases {
            assert_eq!(check(tpl), Ok(()), "{tpl}");
            assert_eq!(render(tpl, &v), want, "{tpl}");
        }
    }

    #[test]
    fn values_are_not_rendered_again() {
        let v = vars(&[("a", "{{b}}"), ("b", "x")]);
        assert_eq!(render("{{a}}", &v), "{{b}}");
    }

    #[test]
    fn malformed_placeholders_are_refused_and_kept_verbatim() {
        let v = vars(&[("name", "Ann")]);
        let cases = [
            ("Hi {{", "not closed"),
            ("Hi {{name", "not closed"),
            ("{{}}", "expected a variable name"),
            ("{{ 1x }}", "must start with a letter"),
            ("{{name | upper}}", "the only filter"),
            ("{{name | default \"x\"}}", "expected `:`"),
            ("{{name | default: x}}", "must be quoted"),
            ("{{name | default: \"x}}", "not closed"),
            ("{{na me}}", "unexpected 'm'"),
            ("ok {{name}} then {{", "placeholder at byte 17"),
        ];
        for (tpl, want) in cases {
            let err = check(tpl).unwrap_err();
            assert!(err.contains(want), "{tpl}: {err}");
        }
        assert_eq!(render("Hi {{na me}} {{name}}", &v), "Hi {{na me}} Ann");
        assert_eq!(render("{{{{name}}", &v), "{{Ann");
    }

    #[test]
    fn variables_are_listed() {
        assert_eq!(
            variables("{{a}} {{ b | default: 'x' }} {{bad name}} {{a}}"),
            ["a", "b", "a"]
        );
    }

    proptest::proptest! {
        #[test]
        fn render_and_check_never_panic(tpl in "\\PC*", name in "[a-z]{1,3}", val in "\\PC*") {
            let v: BTreeMap<String, String> = [(name, val)].into_iter().collect();
            let _ = render(&tpl, &v);
            let _ = check(&tpl);
            let _ = variables(&tpl);
        }

        #[test]
        fn templatey_input_never_panics(tpl in "([a-z ]|\\{\\{|\\}\\}|\\||default|:|\"|'|\u{e9})*") {
            let v = BTreeMap::new();
            let rendered = render(&tpl, &v);
            if check(&tpl).is_ok() && !tpl.contains("{{") {
                proptest::prop_assert_eq!(rendered.as_ref(), tpl.as_str());
            }
        }
    }
}

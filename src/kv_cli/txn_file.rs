//! The text form of a transaction that `kv txn` reads, as etcdctl's:
//!
//! ```text
//! mod("balance") = "7"
//! value("owner") = "alice"
//!
//! put balance 50
//! put spent 50
//!
//! get balance
//! ```
//!
//! First the compares, one per line, then a blank line, the operations if they
//! all hold, a blank line, and the operations if not. A compare is
//! `value|mod|create|ver("key") =|!=|<|> "operand"`; an operation is
//! `put KEY VALUE`, `del KEY [END]`, `del --prefix P`, `get KEY [END]` or
//! `get --prefix P`. Tokens may be double-quoted (with `\"` and `\\`);
//! lines starting with `#` are comments. Keys and values go through the
//! command's `--hex`/`--base64` encoding.

use bytes::Bytes;

use super::encoding::Encoding;
use crate::proto::keyvalue::v1 as pb;

/// Parses a transaction; the error names the line and what is wrong.
pub(super) fn parse(text: &str, encoding: Encoding) -> Result<pb::TxnRequest, String> {
    let mut sections: Vec<Vec<(usize, &str)>> = vec![Vec::new()];
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if line.is_empty() {
            sections.push(Vec::new());
            continue;
        }
        sections
            .last_mut()
            .expect("sections is never empty")
            .push((number + 1, line));
    }
    if sections.len() > 3 {
        return Err(
            "a transaction has three parts (compares, success, failure) separated \
                    by one blank line each; found more blank lines"
                .into(),
        );
    }
    sections.resize(3, Vec::new());
    let compare = sections[0]
        .iter()
        .map(|&(number, line)| compare(line, encoding).map_err(|e| format!("line {number}: {e}")))
        .collect::<Result<_, _>>()?;
    let ops = |section: &[(usize, &str)]| -> Result<Vec<pb::Op>, String> {
        section
            .iter()
            .map(|&(number, line)| op(line, encoding).map_err(|e| format!("line {number}: {e}")))
            .collect()
    };
    Ok(pb::TxnRequest {
        compare,
        success: ops(&sections[1])?,
        failure: ops(&sections[2])?,
    })
}

/// Splits a line into tokens: whitespace-separated, double quotes group.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&next) = chars.peek() {
        if next.is_whitespace() {
            chars.next();
            continue;
        }
        let mut token = String::new();
        if next == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => token.extend(chars.next()),
                    Some(other) => token.push(other),
                    None => return Err("a quote is not closed".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                token.push(c);
                chars.next();
            }
        }
        tokens.push(token);
    }
    Ok(tokens)
}

fn compare(line: &str, encoding: Encoding) -> Result<pb::Compare, String> {
    use pb::compare::{Op, Target};
    let shape = "expected TARGET(\"key\") OP \"operand\", e.g. mod(\"k\") = \"5\"";
    let open = line.find('(').ok_or(shape)?;
    // A ')' only before the '(' (as in `x)(`) is no key in parentheses.
    let close = line.rfind(')').filter(|&close| close > open).ok_or(shape)?;
    let target = line[..open].trim();
    let key = tokens(&line[open + 1..close])?;
    let [key] = key.as_slice() else {
        return Err(shape.into());
    };
    let rest = tokens(&line[close + 1..])?;
    let [op, operand] = rest.as_slice() else {
        return Err(shape.into());
    };
    let op = match op.as_str() {
        "=" | "==" => Op::Equal,
        "!=" => Op::NotEqual,
        "<" => Op::Less,
        ">" => Op::Greater,
        other => return Err(format!("unknown comparison {other:?} (use =, !=, < or >)")),
    };
    let number = |what: &str| {
        operand
            .parse::<u64>()
            .map_err(|_| format!("{what} compares with a whole number, not {operand:?}"))
    };
    let target = match target {
        "value" => Target::Value(encoding.decode(operand)?),
        "mod" => Target::ModRevision(number("mod")?),
        "create" => Target::CreateRevision(number("create")?),
        "ver" | "version" => Target::Version(number("ver")?),
        other => {
            return Err(format!(
                "unknown compare target {other:?} (use value, mod, create or ver)"
            ));
        }
    };
    Ok(pb::Compare {
        key: encoding.decode(key)?,
        op: op.into(),
        target: Some(target),
    })
}

fn op(line: &str, encoding: Encoding) -> Result<pb::Op, String> {
    use pb::op::Op;
    let tokens = tokens(line)?;
    let words: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let key = |text: &str| encoding.decode(text);
    let op = match words.as_slice() {
        ["put", k, v] => Op::Put(pb::PutRequest {
            key: key(k)?,
            value: encoding.decode(v)?,
            ..Default::default()
        }),
        ["del", "--prefix", p] => Op::Delete(pb::DeleteRequest {
            key: key(p)?,
            prefix: true,
            ..Default::default()
        }),
        ["del", k] => Op::Delete(pb::DeleteRequest {
            key: key(k)?,
            ..Default::default()
        }),
        ["del", k, end] => Op::Delete(pb::DeleteRequest {
            key: key(k)?,
            range_end: key(end)?,
            ..Default::default()
        }),
        ["get", "--prefix", p] => Op::Range(pb::RangeRequest {
            key: key(p)?,
            prefix: true,
            ..Default::default()
        }),
        ["get", k] => Op::Range(pb::RangeRequest {
            key: key(k)?,
            range_end: single_key_end(&key(k)?),
            ..Default::default()
        }),
        ["get", k, end] => Op::Range(pb::RangeRequest {
            key: key(k)?,
            range_end: key(end)?,
            ..Default::default()
        }),
        _ => {
            return Err(format!(
                "{line:?}: expected put KEY VALUE, del KEY [END], del --prefix P, \
                 get KEY [END] or get --prefix P"
            ));
        }
    };
    Ok(pb::Op { op: Some(op) })
}

/// The end of a range holding only `key`: the next possible key.
fn single_key_end(key: &Bytes) -> Bytes {
    let mut end = key.to_vec();
    end.push(0);
    Bytes::from(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_transaction_parses() {
        let text = "# move money\nmod(\"balance\") = \"7\"\nvalue(\"owner\") != \"bob smith\"\n\n\
                    put balance 50\nput \"a key\" \"a \\\"quoted\\\" value\"\ndel --prefix tmp/\n\nget balance\n";
        let txn = parse(text, Encoding::Text).unwrap();
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(
            txn.compare[0].target,
            Some(pb::compare::Target::ModRevision(7))
        );
        assert_eq!(txn.compare[1].op, pb::compare::Op::NotEqual as i32);
        assert_eq!(txn.success.len(), 3);
        let Some(pb::op::Op::Put(put)) = &txn.success[1].op else {
            panic!("a put")
        };
        assert_eq!(put.key, Bytes::from_static(b"a key"));
        assert_eq!(put.value, Bytes::from_static(b"a \"quoted\" value"));
        assert_eq!(txn.failure.len(), 1);
    }

    #[test]
    fn mistakes_name_the_line() {
        for (text, line) in [
            ("mod(\"k\") = \"x\"\n", "line 1"),
            ("\nput k\n", "line 2"),
            ("\n\nfrobnicate k\n", "line 3"),
            ("size(\"k\") = \"1\"\n", "line 1"),
        ] {
            let error = parse(text, Encoding::Text).unwrap_err();
            assert!(error.starts_with(line), "{text:?}: {error}");
        }
        assert!(parse("\n\n\n\n", Encoding::Text).is_err());
    }

    #[test]
    fn a_closing_parenthesis_before_the_opening_one_is_a_parse_error() {
        for text in ["x)(\n", "mod)(\"k\" = \"1\"\n", ")(\n"] {
            let error = parse(text, Encoding::Text).unwrap_err();
            assert!(
                error.starts_with("line 1: expected TARGET"),
                "{text:?}: {error}"
            );
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }
}

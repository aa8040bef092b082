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
//! all hold, a blank line, and the operations if not (blank lines after them,
//! which etcdctl needs, are taken too). A compare is
//! `value|mod|create|ver("key") =|!=|<|> "operand"`; an operation is
//! `put KEY VALUE`, `del KEY [END]`, `del --prefix P`, `get KEY [END]` or
//! `get --prefix P`, where `--prefix` may also follow P (as etcdctl takes
//! it). Any other unquoted word starting with `--` is an unknown option, an
//! error, never a key: a mistyped option taken as a key (`del x --perfix`,
//! the range from x to "--perfix") would do something nobody asked for; a
//! key or value that starts with `--` is quoted. Tokens may be double-quoted
//! (with `\"` and `\\`); lines starting with `#` are comments. Keys and
//! values go through the command's `--hex`/`--base64` encoding.

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
    // etcdctl wants a blank line after the failure part too (it reads until
    // one); blank lines at the end end the transaction, nothing more.
    while sections.len() > 3 && sections.last().is_some_and(Vec::is_empty) {
        sections.pop();
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

/// A word of a line.
struct Token {
    text: String,
    /// Written in double quotes: a key or value, never an option.
    quoted: bool,
}

/// Splits a line into tokens: whitespace-separated, double quotes group.
fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&next) = chars.peek() {
        if next.is_whitespace() {
            chars.next();
            continue;
        }
        let mut token = String::new();
        let quoted = next == '"';
        if quoted {
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
        tokens.push(Token {
            text: token,
            quoted,
        });
    }
    Ok(tokens)
}

/// The texts of the tokens of `line`, for where no option can appear.
fn words(line: &str) -> Result<Vec<String>, String> {
    Ok(tokens(line)?.into_iter().map(|token| token.text).collect())
}

fn compare(line: &str, encoding: Encoding) -> Result<pb::Compare, String> {
    use pb::compare::{Op, Target};
    let shape = "expected TARGET(\"key\") OP \"operand\", e.g. mod(\"k\") = \"5\"";
    let open = line.find('(').ok_or(shape)?;
    // A ')' only before the '(' (as in `x)(`) is no key in parentheses.
    let close = line.rfind(')').filter(|&close| close > open).ok_or(shape)?;
    let target = line[..open].trim();
    let key = words(&line[open + 1..close])?;
    let [key] = key.as_slice() else {
        return Err(shape.into());
    };
    let rest = words(&line[close + 1..])?;
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
    // The first word is the operation; after it, an unquoted word starting
    // with `--` is an option.
    let mut words = Vec::new();
    let mut prefix = false;
    for (index, token) in tokens.iter().enumerate() {
        match token.text.as_str() {
            text if index == 0 || token.quoted || !text.starts_with("--") => words.push(text),
            "--prefix" => prefix = true,
            other => {
                return Err(format!(
                    "{line:?}: unknown option {other:?} (only --prefix is one; quote a key \
                     or value that starts with --)"
                ));
            }
        }
    }
    let key = |text: &str| encoding.decode(text);
    let op = match (words.as_slice(), prefix) {
        (["put", k, v], false) => Op::Put(pb::PutRequest {
            key: key(k)?,
            value: encoding.decode(v)?,
            ..Default::default()
        }),
        (["del", p], true) => Op::Delete(pb::DeleteRequest {
            key: key(p)?,
            prefix: true,
            ..Default::default()
        }),
        (["del", k], false) => Op::Delete(pb::DeleteRequest {
            key: key(k)?,
            ..Default::default()
        }),
        (["del", k, end], false) => Op::Delete(pb::DeleteRequest {
            key: key(k)?,
            range_end: key(end)?,
            ..Default::default()
        }),
        (["get", p], true) => Op::Range(pb::RangeRequest {
            key: key(p)?,
            prefix: true,
            ..Default::default()
        }),
        (["get", k], false) => Op::Range(pb::RangeRequest {
            key: key(k)?,
            range_end: single_key_end(&key(k)?),
            ..Default::default()
        }),
        (["get", k, end], false) => Op::Range(pb::RangeRequest {
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
        // A fourth part is a mistake; blank lines at the end are not.
        assert!(parse("\n\nput a 1\n\nput b 2\n", Encoding::Text).is_err());
    }

    #[test]
    fn etcdctls_blank_line_after_the_failure_part_is_taken() {
        let without = "value(\"k\") != \"1\"\n\nput k 1\n\nput k 2\n";
        let expected = parse(without, Encoding::Text).unwrap();
        for with in [format!("{without}\n"), format!("{without}\n\n\n")] {
            assert_eq!(parse(&with, Encoding::Text).unwrap(), expected, "{with:?}");
        }
        assert_eq!(expected.failure.len(), 1);
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

    /// The one operation of a transaction whose success branch is `line`.
    fn only_op(line: &str) -> pb::op::Op {
        let txn = parse(&format!("\n{line}\n"), Encoding::Text).unwrap();
        assert_eq!(txn.success.len(), 1, "{line}");
        txn.success[0].op.clone().expect("an operation")
    }

    #[test]
    fn the_prefix_option_may_come_before_or_after_the_key() {
        for line in ["del --prefix tmp/", "del tmp/ --prefix"] {
            let pb::op::Op::Delete(delete) = only_op(line) else {
                panic!("{line}: a delete")
            };
            assert_eq!(
                (delete.key, delete.range_end, delete.prefix),
                (Bytes::from_static(b"tmp/"), Bytes::new(), true),
                "{line}"
            );
        }
        let pb::op::Op::Range(range) = only_op("get tmp/ --prefix") else {
            panic!("a range")
        };
        assert_eq!(
            (range.key, range.prefix),
            (Bytes::from_static(b"tmp/"), true)
        );
    }

    #[test]
    fn an_unknown_option_is_an_error_and_a_quoted_one_is_a_key() {
        for (text, complaint) in [
            (
                "\ndel x --from-key\n",
                "line 2: \"del x --from-key\": unknown option \"--from-key\"",
            ),
            (
                "\n\nput k --5\n",
                "line 3: \"put k --5\": unknown option \"--5\"",
            ),
            (
                "\ndel --prefix\n",
                "line 2: \"del --prefix\": expected put KEY VALUE",
            ),
            (
                "\ndel a b --prefix\n",
                "line 2: \"del a b --prefix\": expected put KEY VALUE",
            ),
            (
                "\nput k v --prefix\n",
                "line 2: \"put k v --prefix\": expected put KEY VALUE",
            ),
        ] {
            let error = parse(text, Encoding::Text).unwrap_err();
            assert!(error.starts_with(complaint), "{text:?}: {error}");
        }
        let pb::op::Op::Delete(delete) = only_op("del x \"--prefix\"") else {
            panic!("a delete")
        };
        assert_eq!(
            (delete.range_end, delete.prefix),
            (Bytes::from_static(b"--prefix"), false)
        );
        let pb::op::Op::Put(put) = only_op("put \"--k\" \"--5\"") else {
            panic!("a put")
        };
        assert_eq!(
            (put.key, put.value),
            (Bytes::from_static(b"--k"), Bytes::from_static(b"--5"))
        );
    }
}

//! The incremental read against the whole one: whenever it answers, it answers what parsing
//! the whole text gives, over hand-picked edits and random ones.

use super::*;

/// The whole text's raw config, when it parses with no unknown key.
fn whole(text: &str) -> Option<RawConfig> {
    let fail = |problems| crate::config::ConfigError::new("<test>", problems);
    let mut unknown = Vec::new();
    let raw = crate::config::parse_whole(text, &fail, &mut unknown).ok()?;
    unknown.is_empty().then_some(raw)
}

/// `new` read incrementally after `old` (which must parse); checked against the whole read
/// whenever it answers.
fn again(old: &str, new: &str) -> Option<Reparsed> {
    let raw = whole(old).expect("the old text parses");
    let layout = Layout::of(old).expect("the old text has a layout");
    let reparsed = layout.reparse(&raw, new)?;
    check(new, &reparsed);
    Some(reparsed)
}

fn check(new: &str, reparsed: &Reparsed) {
    let Some(expected) = whole(new) else {
        panic!("read incrementally, but the whole text does not parse:\n{new}");
    };
    assert_eq!(reparsed.raw, expected, "raw config differs for:\n{new}");
    let layout = Layout::of(new).expect("a text read incrementally has a layout");
    assert_eq!(
        reparsed.layout.segments, layout.segments,
        "segments of:\n{new}"
    );
    assert_eq!(reparsed.layout.counts, layout.counts);
    assert_eq!(reparsed.layout.text, new);
}

fn dependency(i: usize) -> String {
    match i % 4 {
        0 => format!(
            "[dependencies.d{i}]\nkind = \"http\"\nurl = \"http://h{i}.internal/health\"\n\n"
        ),
        1 => format!(
            "# the database\n[dependencies.d{i}]\nkind = \"tcp\"\naddress = \"db{i}:5432\"\nparents = [\n  \"d0\",\n]\n\n"
        ),
        2 => format!(
            "[dependencies.d{i}]\nkind = \"http\"\nurl = \"https://h{i}.internal/\"\nheaders = {{ x-a = \"1\" }}\n\
             [dependencies.d{i}.tls]\nserver_name = \"h{i}\"\n\
             [[dependencies.d{i}.body]]\ncontains = \"\"\"\n[dependencies.fake]\nok\"\"\"\n\n"
        ),
        _ => format!(
            "[dependencies.\"d{i}\"]\nkind = 'grpc'\ntarget = \"g{i}:50051\"\nmetadata.x-b = \"2\"\n\n"
        ),
    }
}

fn base() -> String {
    let mut text = String::from(
        "[server]\ngrpc_listen = \"127.0.0.1:0\"\n\n[defaults]\ninterval = \"1s\"\n\n",
    );
    for i in 0..8 {
        text.push_str(&dependency(i));
    }
    text.push_str("[services.api]\ndependencies = { d0 = \"critical\" }\n\n");
    for i in 8..16 {
        text.push_str(&dependency(i));
    }
    text
}

#[test]
fn a_changed_table_is_parsed_alone_and_the_rest_taken() {
    let old = base();
    let cases = [
        ("a value", old.replace("h4.internal", "h4b.internal"), 1),
        ("a sub-table's value", old.replace("server_name = \"h6\"", "server_name = \"x\""), 1),
        ("an array table's", old.replace("ok\"\"\"\n\n[dependencies.\"d7\"]", "ko\"\"\"\n\n[dependencies.\"d7\"]"), 1),
        ("a quoted header's table", old.replace("g3:50051", "g3:50052"), 1),
        ("the last table", old.replace("h14.internal", "x.internal"), 1),
        ("a table added", old.replace("[dependencies.d5]", "[dependencies.new]\nkind = \"tcp\"\naddress = \"n:1\"\n\n[dependencies.d5]"), 2),
        ("a table added at the end", format!("{old}[dependencies.end]\nkind = \"tcp\"\naddress = \"e:1\"\n"), 2),
        ("a table removed (with its comment, in the table before)", old.replace(&dependency(5), ""), 1),
        ("a table renamed", old.replace("[dependencies.d4]", "[dependencies.d4-renamed]"), 1),
        ("two tables apart", old.replace("h0.internal", "a.internal").replace("h4.internal", "b.internal"), 5),
        ("a comment", old.replace("# the database\n[dependencies.d5]", "# the main database\n[dependencies.d5]"), 1),
        ("a sub-table added", old.replace("db5:5432\"\nparents = [\n  \"d0\",\n]\n", "db5:5432\"\nparents = [\n  \"d0\",\n]\n[dependencies.d5.tls]\nserver_name = \"db\"\n"), 1),
        ("a CRLF line", old.replace("url = \"http://h4.internal/health\"\n", "url = \"http://h4.internal/health\"\r\n"), 1),
    ];
    for (what, new, parsed) in cases {
        assert_ne!(new, old, "{what}: the edit applies");
        let reparsed = again(&old, &new).unwrap_or_else(|| panic!("{what}: read incrementally"));
        assert_eq!(reparsed.parsed, parsed, "{what}: tables parsed");
    }
    let same = again(&old, &old).expect("the same text");
    assert_eq!(same.parsed, 0, "nothing parsed for the same text");
}

#[test]
fn whatever_could_read_differently_takes_the_whole_parse() {
    let old = base();
    let cases = [
        ("a section", old.replace("interval = \"1s\"", "interval = \"2s\"")),
        ("a service", old.replace("d0 = \"critical\"", "d1 = \"critical\"")),
        ("a table renamed onto another", old.replace("[dependencies.d4]", "[dependencies.d8]")),
        ("a key moved before the header", old.replace("[dependencies.d4]\nkind = \"http\"\n", "kind = \"http\"\n[dependencies.d4]\n")),
        ("a line no longer ended", old.replace("address = \"db9:5432\"\nparents = [\n  \"d0\",\n]\n\n", "address = \"db9:5432\"\nparents = [\n  \"d0\",\n] ")),
        ("a string left open", old.replace("url = \"http://h4.internal/health\"", "url = \"\"\"http://h4.internal/health\"")),
        ("a syntax error", old.replace("kind = \"tcp\"\naddress = \"db5", "kind = \naddress = \"db5")),
        ("an unknown key", old.replace("address = \"db5:5432\"", "adress = \"db5:5432\"")),
        ("a wrong type", old.replace("address = \"db5:5432\"", "address = 5432")),
        ("a [dependencies] table", old.replace("[dependencies.d5]", "[dependencies]\n[dependencies.d5]")),
        ("a sub-table of another's", old.replace("[dependencies.d5]", "[dependencies.d12.tls]\nserver_name = \"x\"\n[dependencies.d5]")),
        ("a table made an array", old.replace("[dependencies.d4]", "[[dependencies.d4]]")),
        ("a section made a dependency", old.replace("[services.api]\ndependencies = { d0 = \"critical\" }", "[dependencies.api]\nkind = \"tcp\"\naddress = \"a:1\"")),
        ("a dotted key before the header", old.replace("[dependencies.d4]", "dependencies.zz.kind = \"tcp\"\ndependencies.zz.address = \"z:1\"\n[dependencies.d4]")),
    ];
    for (what, new) in cases {
        assert_ne!(new, old, "{what}: the edit applies");
        assert!(
            again(&old, &new).is_none(),
            "{what}: must take the whole parse"
        );
    }
    // A dependency whose sub-table lies elsewhere cannot be read in part.
    let apart = format!("{old}[dependencies.d0.tls]\nserver_name = \"x\"\n");
    assert!(whole(&apart).is_some());
    let changed = apart.replace("h0.internal", "h0b.internal");
    let raw = whole(&apart).expect("parses");
    let layout = Layout::of(&apart).expect("layout");
    assert!(layout.reparse(&raw, &changed).is_none());
    let removed = apart.replacen(&dependency(0), "", 1);
    assert!(whole(&removed).is_some(), "d0 is left with its sub-table");
    assert!(layout.reparse(&raw, &removed).is_none());
    // Nor a file that defines dependencies by a dotted key at the top.
    let dotted =
        format!("dependencies.top.kind = \"tcp\"\ndependencies.top.address = \"t:1\"\n{old}");
    assert!(whole(&dotted).is_some());
    assert!(
        Layout::of(&dotted).is_none(),
        "no layout: always parsed whole"
    );
}

#[test]
fn edits_in_a_row_keep_the_layout_true() {
    let mut text = base();
    let mut raw = whole(&text).expect("parses");
    let mut layout = Layout::of(&text).expect("layout");
    let mut incremental = 0;
    for round in 0..40 {
        let i = (round * 7) % 16;
        let new = if round % 5 == 4 {
            format!("{text}[dependencies.r{round}]\nkind = \"tcp\"\naddress = \"r:{round}\"\n")
        } else {
            let at = (text.find(&format!(".d{i}]")))
                .or_else(|| text.find(&format!(".\"d{i}\"]")))
                .expect("present");
            let line = text[at..].find('\n').expect("line") + at + 1;
            format!("{}# round {round}\n{}", &text[..line], &text[line..])
        };
        match layout.reparse(&raw, &new) {
            Some(r) => {
                check(&new, &r);
                incremental += 1;
                (raw, layout) = (r.raw, r.layout);
            }
            None => {
                raw = whole(&new).expect("parses");
                layout = Layout::of(&new).expect("layout");
            }
        }
        text = new;
    }
    assert!(
        incremental >= 30,
        "only {incremental} of 40 read incrementally"
    );
}

#[test]
fn random_edits_never_read_differently_from_the_whole() {
    const SNIPPETS: [&str; 22] = [
        "\n",
        "[",
        "]",
        "\"",
        "\"\"\"",
        "'''",
        "=",
        " ",
        "#",
        ".",
        ",",
        "{",
        "}",
        "\r\n",
        "x = 1\n",
        "kind = \"tcp\"\n",
        "[dependencies.dnew]\nkind = \"tcp\"\naddress = \"a:1\"\n",
        "[dependencies.d3]\n",
        "[dependencies.d2.tls]\n",
        "[[dependencies.d2.body]]\ncontains = \"x\"\n",
        "dependencies.d1.kind = \"tcp\"\n",
        "[dependencies]\n",
    ];
    let old = base();
    let raw = whole(&old).expect("parses");
    let layout = Layout::of(&old).expect("layout");
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut incremental, mut parses) = (0, 0);
    for _ in 0..3000 {
        let mut new = old.clone();
        for _ in 0..rng.usize(1..=2) {
            let at = rng.usize(0..=new.len());
            if rng.bool() {
                let end = (at + rng.usize(1..=6)).min(new.len());
                new.replace_range(at..end, "");
            } else {
                new.insert_str(at, SNIPPETS[rng.usize(0..SNIPPETS.len())]);
            }
        }
        if whole(&new).is_some() {
            parses += 1;
        }
        if let Some(r) = layout.reparse(&raw, &new) {
            check(&new, &r);
            incremental += 1;
        }
    }
    // Most random edits break the file; those that do not are mostly read in part.
    assert!(parses >= 300, "only {parses} edits parse");
    assert!(
        incremental * 2 >= parses,
        "{incremental} of {parses} read incrementally"
    );
}

#[test]
fn common_prefix_and_suffix_are_exact_across_blocks() {
    let a: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    for at in [0, 1, 255, 256, 257, 1000, 1999] {
        let mut b = a.clone();
        b[at] ^= 0xff;
        assert_eq!(common_prefix(&a, &b), at, "prefix, difference at {at}");
        assert_eq!(
            common_suffix(&a, &b),
            a.len() - at - 1,
            "suffix, difference at {at}"
        );
    }
    assert_eq!(common_prefix(&a, &a[..700]), 700);
    assert_eq!(common_suffix(&a, &a[1300..]), 700);
    assert_eq!(common_prefix(&a, &a), a.len());
    assert_eq!((common_prefix(b"", &a), common_suffix(&a, b"")), (0, 0));
}

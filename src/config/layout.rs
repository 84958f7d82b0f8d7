//! Reading a changed config file again by parsing only the dependency tables whose text
//! changed.
//!
//! Why: on a saturated core, a reload's preparation thread costs the server the CPU it takes in
//! one stretch (`perf sched`: the new thread runs from one scheduler tick to the next, 4 ms at
//! `HZ=250`, whatever its class or nice value; BENCHMARKS.md). The stretch ends sooner only if
//! the work does. Parsing the TOML of a 1,000-dependency file and deserializing it was 1.6 ms of
//! a 2.1 ms read (release, no LTO: `toml` 1.1 ms, serde 0.5 ms), most of it for tables that did
//! not change; lexing and scanning that whole file for its headers alone takes 0.2 ms.
//!
//! How, in the manner of an editor's incremental reparse:
//! - A read that succeeded keeps a [`Layout`] beside its raw config
//!   ([`super::Validated`]): the text, where each top-level table starts (its header's line),
//!   and whose it is (`[dependencies.NAME]` and its sub-tables `[dependencies.NAME.tls]`,
//!   `[[dependencies.NAME.body]]` belong to `NAME`; anything else is another section).
//! - The next read compares the texts: the common prefix and suffix leave one changed range,
//!   widened to whole tables. When those tables all belong to dependencies, only the new text
//!   of that range is parsed, as a document of its own, and its tables replace the old ones;
//!   the rest is taken as it was.
//! - Anything that could make the pieces read differently from the whole takes the full parse
//!   instead (it also gives the exact problems of a bad file): a changed range that touches
//!   anything but dependency tables; a range whose text does not parse on its own, has a key
//!   before its first header (it would belong to the table before), does not end a line, or has
//!   an unknown key; a dependency that also has tables outside the range (they would be
//!   defined twice, or left behind); a file that defines dependencies other than by
//!   `[dependencies.NAME…]` headers (`[dependencies]`, dotted or inline keys at the top).
//!
//! Why this is sound: the text before the range is the old text, which parsed. The range
//! starts at the beginning of a header's line, where a TOML parser holds nothing but the
//! current table and what was defined; it parses on its own and ends a line, so the parser
//! leaves it at the start of a line again, and the text after it is the old text starting with
//! a header, which resets the current table. What the range defines lies under its own
//! dependency names, which nothing outside it defines: no duplicate the whole would reject is
//! missed. The tests compare this with the full parse over edits of every kind, random ones
//! included.
//!
//! Measured (1,000 HTTP dependencies, one changed per read, release without LTO, median of 38
//! reads in a loop): reading again went from 2.06 to 0.40 ms — the changed range found and
//! parsed 0.17 ms, validating 0.30 ms once it walked the read before's specs in name order
//! instead of looking each up ([`super::validate`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use toml_parser::parser::EventReceiver;
use toml_parser::{ErrorSink, ParseError, Source, Span};

use super::raw::{RawConfig, RawDependency};

#[cfg(test)]
mod tests;

/// Whose a top-level table's text is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owner {
    /// `[dependencies.NAME]` or one of its sub-tables.
    Dependency(Arc<str>),
    /// Anything else: the text before the first header, `[server]`, `[services.NAME]`, …
    Other,
}

/// A top-level table: from the start of its header's line to the next one's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    start: usize,
    owner: Owner,
}

/// A file's text as its tables lie in it: kept by a read that succeeded, for the next.
#[derive(Debug)]
pub(crate) struct Layout {
    text: String,
    /// In text order; the first starts at 0 (the text before the first header).
    segments: Vec<Segment>,
    /// How many segments each dependency has.
    counts: HashMap<Arc<str>, u32>,
}

/// A changed text read by parsing only its changed dependency tables.
pub(crate) struct Reparsed {
    pub(crate) raw: RawConfig,
    pub(crate) layout: Layout,
    /// How many dependency tables were parsed (the others were taken).
    pub(crate) parsed: usize,
}

/// Only the dependency tables, for a range parsed on its own; anything else is unknown there.
#[derive(serde::Deserialize)]
struct RawRange {
    #[serde(default)]
    dependencies: BTreeMap<String, Arc<RawDependency>>,
}

impl Layout {
    /// The layout of `text` (which parsed); `None` when the text defines dependencies other
    /// than by their own headers, or does not scan (having parsed, it always should).
    pub(crate) fn of(text: &str) -> Option<Layout> {
        let scanned = scan(text)?;
        if scanned.dependencies_elsewhere {
            return None;
        }
        Some(Layout {
            text: text.to_owned(),
            counts: counts(&scanned.segments),
            segments: scanned.segments,
        })
    }

    /// `text` read by parsing only the dependency tables that changed since this layout's
    /// text, which gave `raw`; `None` when it must be parsed whole (the module docs say when).
    pub(crate) fn reparse(&self, raw: &RawConfig, text: &str) -> Option<Reparsed> {
        let old = self.text.as_str();
        if old == text {
            return Some(self.compose(raw, text, 0..0, Vec::new(), RawRange::empty()));
        }
        let prefix = common_prefix(old.as_bytes(), text.as_bytes());
        let room = old.len().min(text.len()) - prefix;
        let suffix = common_suffix(old.as_bytes(), text.as_bytes()).min(room);
        let changed_end = old.len() - suffix;
        // The segments the change touches: from the one holding its first byte to the one
        // holding its last (an insertion: the one it is inserted into).
        let holding = |at: usize| self.segments.partition_point(|s| s.start <= at) - 1;
        let mut first = holding(prefix.min(old.len().saturating_sub(1)));
        let mut last = if changed_end > prefix {
            holding(changed_end - 1)
        } else {
            first
        };
        // With the tables beside them of the same dependencies (`[dependencies.NAME.tls]`).
        let owner = |i: usize| &self.segments[i].owner;
        while first > 0 && owner(first - 1) == owner(first) {
            first -= 1;
        }
        while last + 1 < self.segments.len() && owner(last + 1) == owner(last) {
            last += 1;
        }
        let touched = &self.segments[first..=last];
        if touched.iter().any(|s| s.owner == Owner::Other) {
            return None;
        }
        let start = self.segments[first].start;
        let old_end = self.segments.get(last + 1).map_or(old.len(), |s| s.start);
        let new_end = (old_end + text.len()).checked_sub(old.len())?;
        let range = text.get(start..new_end)?;
        if new_end < text.len() && !range.ends_with('\n') {
            return None;
        }
        let scanned = scan(range)?;
        // The first segment is the text before the range's first header: it may hold
        // comments, but a key there would belong to the table before the range.
        let own = &scanned.segments[1..];
        if scanned.root_has_keys || own.iter().any(|s| s.owner == Owner::Other) {
            return None;
        }
        // Every name in the range, before and after, is defined nowhere else.
        let mut inside: HashMap<&str, u32> = HashMap::new();
        for s in touched {
            if let Owner::Dependency(name) = &s.owner {
                *inside.entry(name).or_default() += 1;
            }
        }
        let outside = |name: &str| {
            self.counts.get(name).copied().unwrap_or(0) > inside.get(name).copied().unwrap_or(0)
        };
        if inside.keys().any(|name| outside(name)) {
            return None;
        }
        if own
            .iter()
            .any(|s| matches!(&s.owner, Owner::Dependency(name) if outside(name)))
        {
            return None;
        }
        let parsed = RawRange::parse(range)?;
        let segments = own
            .iter()
            .map(|s| Segment {
                start: s.start + start,
                owner: s.owner.clone(),
            })
            .collect();
        Some(self.compose(raw, text, first..last + 1, segments, parsed))
    }

    /// `raw` and this layout with the segments in `replaced` (and their tables) replaced by
    /// `segments` (and `parsed`'s tables), those after them moved to where `text` has them.
    fn compose(
        &self,
        raw: &RawConfig,
        text: &str,
        replaced: std::ops::Range<usize>,
        segments: Vec<Segment>,
        parsed: RawRange,
    ) -> Reparsed {
        let mut tables = raw.dependencies.clone();
        for s in &self.segments[replaced.clone()] {
            if let Owner::Dependency(name) = &s.owner {
                tables.remove(&**name);
            }
        }
        let count = parsed.dependencies.len();
        tables.extend(parsed.dependencies);
        let mut new = Vec::with_capacity(self.segments.len() + segments.len());
        new.extend_from_slice(&self.segments[..replaced.start]);
        new.extend(segments);
        new.extend(self.segments[replaced.end..].iter().map(|s| Segment {
            start: (s.start + text.len()) - self.text.len(),
            owner: s.owner.clone(),
        }));
        Reparsed {
            raw: RawConfig {
                server: raw.server.clone(),
                defaults: raw.defaults.clone(),
                dependencies: tables,
                services: raw.services.clone(),
                telemetry: raw.telemetry.clone(),
                limits: raw.limits.clone(),
                admin: raw.admin.clone(),
            },
            layout: Layout {
                text: text.to_owned(),
                counts: counts(&new),
                segments: new,
            },
            parsed: count,
        }
    }
}

impl RawRange {
    fn empty() -> RawRange {
        RawRange {
            dependencies: BTreeMap::new(),
        }
    }

    /// The range's tables, or `None` when it does not parse, does not deserialize, or has a
    /// key that is not a known dependency setting (the full parse then names the problem).
    fn parse(range: &str) -> Option<RawRange> {
        let de = toml::Deserializer::parse(range).ok()?;
        let mut unknown = false;
        let mut on_unknown = |_: serde_ignored::Path<'_>| unknown = true;
        let parsed: RawRange =
            serde::Deserialize::deserialize(serde_ignored::Deserializer::new(de, &mut on_unknown))
                .ok()?;
        (!unknown).then_some(parsed)
    }
}

fn counts(segments: &[Segment]) -> HashMap<Arc<str>, u32> {
    let mut counts = HashMap::new();
    for s in segments {
        if let Owner::Dependency(name) = &s.owner {
            *counts.entry(name.clone()).or_default() += 1;
        }
    }
    counts
}

/// Compared a block at a time (`memcmp`), then byte by byte: a byte-at-a-time loop over a
/// 100 KB file was a tenth of a reload's preparation.
const BLOCK: usize = 256;

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + BLOCK <= n && a[i..i + BLOCK] == b[i..i + BLOCK] {
        i += BLOCK;
    }
    i + (a[i..n].iter().zip(&b[i..n]))
        .take_while(|(x, y)| x == y)
        .count()
}

fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = 0;
    while i + BLOCK <= n && a[n - i - BLOCK..n - i] == b[n - i - BLOCK..n - i] {
        i += BLOCK;
    }
    i + (a[..n - i].iter().rev().zip(b[..n - i].iter().rev()))
        .take_while(|(x, y)| x == y)
        .count()
}

/// What scanning a text's events found.
struct Scanned {
    segments: Vec<Segment>,
    /// A key-value before the first header.
    root_has_keys: bool,
    /// `[dependencies]`, or a top-level key `dependencies` (dotted or inline).
    dependencies_elsewhere: bool,
}

/// The segments of `text`, from `toml_parser`'s events (no tree built); `None` when it does
/// not parse.
fn scan(text: &str) -> Option<Scanned> {
    let source = Source::new(text);
    let tokens = source.lex().into_vec();
    let mut scanner = Scanner {
        source,
        segments: vec![Segment {
            start: 0,
            owner: Owner::Other,
        }],
        header: None,
        depth: 0,
        key_value_next: true,
        in_root: true,
        root_has_keys: false,
        dependencies_elsewhere: false,
        failed: false,
    };
    let mut errors = Errors(false);
    toml_parser::parser::parse_document(&tokens, &mut scanner, &mut errors);
    if errors.0 || scanner.failed {
        return None;
    }
    Some(Scanned {
        segments: scanner.segments,
        root_has_keys: scanner.root_has_keys,
        dependencies_elsewhere: scanner.dependencies_elsewhere,
    })
}

struct Errors(bool);

impl ErrorSink for Errors {
    fn report_error(&mut self, _error: ParseError) {
        self.0 = true;
    }
}

struct Scanner<'s> {
    source: Source<'s>,
    segments: Vec<Segment>,
    /// Inside a header: where its line starts, whether it is `[[…]]`, its keys so far.
    header: Option<(usize, bool, Vec<String>)>,
    /// Open arrays and inline tables.
    depth: u32,
    /// Whether the next key at depth 0 starts a key-value.
    key_value_next: bool,
    /// Before the first header.
    in_root: bool,
    root_has_keys: bool,
    dependencies_elsewhere: bool,
    failed: bool,
}

impl Scanner<'_> {
    fn open(&mut self, span: Span, array: bool) {
        let line = self.source.input()[..span.start()]
            .rfind('\n')
            .map_or(0, |i| i + 1);
        self.header = Some((line, array, Vec::new()));
        self.in_root = false;
    }

    fn close(&mut self) {
        let Some((start, array, keys)) = self.header.take() else {
            self.failed = true;
            return;
        };
        let owner = match keys.as_slice() {
            [first] if first == "dependencies" => {
                self.dependencies_elsewhere = true;
                Owner::Other
            }
            [first, name] if first == "dependencies" && !array => {
                Owner::Dependency(Arc::from(name.as_str()))
            }
            [first, name, _, ..] if first == "dependencies" => {
                Owner::Dependency(Arc::from(name.as_str()))
            }
            _ => Owner::Other,
        };
        self.segments.push(Segment { start, owner });
    }
}

impl EventReceiver for Scanner<'_> {
    fn std_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open(span, false);
    }
    fn std_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.close();
    }
    fn array_table_open(&mut self, span: Span, _error: &mut dyn ErrorSink) {
        self.open(span, true);
    }
    fn array_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.close();
    }
    fn inline_table_open(&mut self, _span: Span, _error: &mut dyn ErrorSink) -> bool {
        self.depth += 1;
        true
    }
    fn inline_table_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.depth = self.depth.saturating_sub(1);
    }
    fn array_open(&mut self, _span: Span, _error: &mut dyn ErrorSink) -> bool {
        self.depth += 1;
        true
    }
    fn array_close(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.depth = self.depth.saturating_sub(1);
    }
    fn simple_key(
        &mut self,
        span: Span,
        encoding: Option<toml_parser::decoder::Encoding>,
        _error: &mut dyn ErrorSink,
    ) {
        let key = || {
            let text = self.source.input().get(span.start()..span.end())?;
            let raw = toml_parser::Raw::new_unchecked(text, encoding, span);
            let mut key = String::new();
            let mut errors = Errors(false);
            raw.decode_key(&mut key, &mut errors);
            (!errors.0).then_some(key)
        };
        if self.header.is_some() {
            let key = key();
            match (key, &mut self.header) {
                (Some(key), Some((_, _, keys))) => keys.push(key),
                _ => self.failed = true,
            }
            return;
        }
        if self.depth == 0 && self.key_value_next {
            self.key_value_next = false;
            if self.in_root {
                self.root_has_keys = true;
                if key().is_none_or(|k| k == "dependencies") {
                    self.dependencies_elsewhere = true;
                }
            }
        }
    }
    fn newline(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        if self.depth == 0 {
            self.key_value_next = true;
        }
    }
    fn error(&mut self, _span: Span, _error: &mut dyn ErrorSink) {
        self.failed = true;
    }
}

//! Parser of RhoConnect v3 query pages and search answers (spec §4.2–4.3, §7.2–7.4).
//!
//! A query page is a JSON array of objects:
//!
//! ```json
//! [{"version":3},{"token":"564744267555226"},{"count":50},{"progress_count":0},{"total_count":300},
//!  {"insert":{"192":{"name":"Product 192","price":"202.92"}}}]
//! ```
//!
//! The parser is strict on what it knows and lenient on what it does not:
//!
//! * every element must be a JSON object; the keys of all elements are read in any order, so the
//!   commands object may also be split into single-key elements;
//! * `version` must be present and equal [`SYNC_VERSION`], otherwise [`PageError::Version`];
//! * unknown keys (elements or commands) are skipped, whatever their value (up to
//!   [`MAX_UNKNOWN_DEPTH`] levels of nesting);
//! * a known key with a value of the wrong type is a [`PageError::Type`].
//!
//! Strings borrow from the input when they contain no escape sequence. The parser runs a custom
//! serde visitor over `serde_json::Deserializer::from_slice`; no `serde_json::Value` is built.
//!
//! Attribute values that are JSON numbers keep their literal text (`1.50` stays `"1.50"`). serde_json
//! hands numbers over as `u64`/`i64`/`f64` only (its `raw_value` feature is not enabled for this
//! crate), so the parser counts the numbers it is given and, the first time the text of one is
//! needed, scans the input once for the spans of all number literals. The n-th number serde saw is
//! the n-th number literal of the (already validated) input.

use std::borrow::Cow;
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The protocol version a page must announce (`Rhoconnect::SYNC_VERSION`).
pub const SYNC_VERSION: u64 = 3;
/// Largest accepted body, in bytes (256 MiB).
pub const MAX_BODY_LEN: usize = 256 * 1024 * 1024;
/// Largest accepted string value, in bytes after unescaping (16 MiB): attribute values, `metadata`,
/// error messages.
pub const MAX_VALUE_LEN: usize = 16 * 1024 * 1024;
/// Largest accepted object id, in bytes (4 KiB): ids in every command map, link ids, `token`
/// and `source`.
pub const MAX_ID_LEN: usize = 4 * 1024;
/// Largest accepted attribute name or error kind, in bytes (4 KiB).
pub const MAX_NAME_LEN: usize = 4 * 1024;
/// Deepest nesting of arrays and objects accepted inside the value of an unknown key.
pub const MAX_UNKNOWN_DEPTH: usize = 32;

/// A parsed query page (or one source's page of a search answer).
///
/// Strings borrow from the input when they contain no escapes. Missing elements take their default
/// (`""`, `0`, `None`, empty lists).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page<'a> {
    /// The page token: `""` = end of the sync of this source, or nothing to acknowledge.
    pub token: Cow<'a, str>,
    /// Number of objects in `insert` plus number of objects in `delete`, as sent by the server.
    pub count: u64,
    /// Always 0 with RhoConnect 7.8 (obsolete).
    pub progress_count: u64,
    /// Size of the source's master document on the server (absent in search pages: 0).
    pub total_count: u64,
    /// Source name (search pages carry `{"source":..}`).
    pub source: Option<Cow<'a, str>>,
    /// Optional `{"refresh_time":N}` element.
    pub refresh_time: Option<i64>,
    /// `insert`: attributes to upsert, per object.
    pub inserts: Vec<ObjectAttrs<'a>>,
    /// `delete`: attributes (with their old values) to remove, per object.
    pub deletes: Vec<ObjectAttrs<'a>>,
    /// `links`: temporary id → server id, results of creates pushed by this client.
    pub links: Vec<Link<'a>>,
    /// `metadata`: a string holding JSON.
    pub metadata: Option<Cow<'a, str>>,
    /// `{"schema-changed":"true"}` was present.
    pub schema_changed: bool,
    /// `create-error`, merged from `<id>` and `<id>-error` keys.
    pub create_errors: Vec<ObjectError<'a>>,
    /// `update-error`, merged from `<id>` and `<id>-error` keys.
    pub update_errors: Vec<ObjectError<'a>>,
    /// `delete-error`, merged from `<id>` and `<id>-error` keys.
    pub delete_errors: Vec<ObjectError<'a>>,
    /// `update-rollback`: the server's view of objects whose update failed.
    pub update_rollback: Vec<ObjectAttrs<'a>>,
    /// First entry of `{"source-error":{"<kind>":{"message":..}}}`.
    pub source_error: Option<KindError<'a>>,
    /// First entry of `{"search-error":{"<kind>":{"message":..}}}`.
    pub search_error: Option<KindError<'a>>,
}

/// One object of an `insert`, `delete` or `update-rollback` map.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectAttrs<'a> {
    /// Object id.
    pub id: Cow<'a, str>,
    /// `(attribute, value)` pairs in wire order. `null` values are left out; numbers and booleans
    /// are given as their JSON literal text.
    pub attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// One entry of `links`: `{"<temp_id>":{"l":"<id>"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link<'a> {
    /// Temporary id under which the client created the object.
    pub temp_id: Cow<'a, str>,
    /// Id given by the server.
    pub id: Cow<'a, str>,
}

/// One failed object of `create-error`, `update-error` or `delete-error`.
///
/// Merged from the `<id>` key (attributes as the client sent them) and the `<id>-error` key
/// (`{"message":..}`), whatever their order. A missing `<id>` key gives empty `attrs`, a missing
/// `<id>-error` key gives an empty `message`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectError<'a> {
    /// Object id (temporary id for creates).
    pub id: Cow<'a, str>,
    /// Error message.
    pub message: Cow<'a, str>,
    /// Attributes as sent by the client.
    pub attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// An error of a whole source: `{"<kind>":{"message":..}}`, e.g. kind `query-error`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KindError<'a> {
    /// Error kind, e.g. `query-error`, `search-error`.
    pub kind: Cow<'a, str>,
    /// Error message.
    pub message: Cow<'a, str>,
}

/// Why a body is not an acceptable page.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum PageError {
    /// Not JSON, or JSON of the wrong shape; the message says where.
    #[error("malformed page: {0}")]
    Json(String),
    /// The `version` element is missing (`None`) or is not 3 (RhoConnect `ERR_SYNCVERSION`).
    #[error("{}", version_message(.0))]
    Version(Option<u64>),
    /// A known key with a value of the wrong type.
    #[error("wrong type for `{field}`: expected {expected}")]
    Type {
        /// Where: the key, e.g. `count`, or a path such as `insert/192/price`.
        field: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A limit was exceeded (see the `MAX_*` constants).
    #[error("page exceeds a limit ({limit})")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
}

fn version_message(version: &Option<u64>) -> String {
    match version {
        None => "page has no version element".to_owned(),
        Some(v) => format!("unsupported page version {v} (expected {SYNC_VERSION})"),
    }
}

impl<'a> Page<'a> {
    /// The token is empty: the last page of this source's sync, or a page with nothing to
    /// acknowledge.
    pub fn is_final(&self) -> bool {
        self.token.is_empty()
    }

    /// Number of objects carried in `insert` and `delete` (what `count` announces, unless the page
    /// was cut).
    pub fn object_count(&self) -> usize {
        self.inserts.len() + self.deletes.len()
    }

    /// The page carries a server error (`*-error`, `update-rollback`, `source-error` or
    /// `search-error`), i.e. RhoConnect `ERR_CUSTOMSYNCSERVER`.
    pub fn has_server_errors(&self) -> bool {
        !self.create_errors.is_empty()
            || !self.update_errors.is_empty()
            || !self.delete_errors.is_empty()
            || !self.update_rollback.is_empty()
            || self.source_error.is_some()
            || self.search_error.is_some()
    }

    /// A copy that owns all its strings.
    pub fn into_owned(self) -> Page<'static> {
        Page {
            token: own(self.token),
            count: self.count,
            progress_count: self.progress_count,
            total_count: self.total_count,
            source: self.source.map(own),
            refresh_time: self.refresh_time,
            inserts: self.inserts.into_iter().map(ObjectAttrs::into_owned).collect(),
            deletes: self.deletes.into_iter().map(ObjectAttrs::into_owned).collect(),
            links: self.links.into_iter().map(Link::into_owned).collect(),
            metadata: self.metadata.map(own),
            schema_changed: self.schema_changed,
            create_errors: self.create_errors.into_iter().map(ObjectError::into_owned).collect(),
            update_errors: self.update_errors.into_iter().map(ObjectError::into_owned).collect(),
            delete_errors: self.delete_errors.into_iter().map(ObjectError::into_owned).collect(),
            update_rollback: self.update_rollback.into_iter().map(ObjectAttrs::into_owned).collect(),
            source_error: self.source_error.map(KindError::into_owned),
            search_error: self.search_error.map(KindError::into_owned),
        }
    }
}

impl<'a> ObjectAttrs<'a> {
    /// The value of attribute `name` (the last one if the name is repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// A copy that owns all its strings.
    pub fn into_owned(self) -> ObjectAttrs<'static> {
        ObjectAttrs {
            id: own(self.id),
            attrs: own_attrs(self.attrs),
        }
    }
}

impl<'a> Link<'a> {
    /// A copy that owns all its strings.
    pub fn into_owned(self) -> Link<'static> {
        Link {
            temp_id: own(self.temp_id),
            id: own(self.id),
        }
    }
}

impl<'a> ObjectError<'a> {
    /// The value of attribute `name` as sent (the last one if the name is repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_ref())
    }

    /// A copy that owns all its strings.
    pub fn into_owned(self) -> ObjectError<'static> {
        ObjectError {
            id: own(self.id),
            message: own(self.message),
            attrs: own_attrs(self.attrs),
        }
    }
}

impl<'a> KindError<'a> {
    /// A copy that owns all its strings.
    pub fn into_owned(self) -> KindError<'static> {
        KindError {
            kind: own(self.kind),
            message: own(self.message),
        }
    }
}

fn own(s: Cow<'_, str>) -> Cow<'static, str> {
    Cow::Owned(s.into_owned())
}

fn own_attrs(attrs: Vec<(Cow<'_, str>, Cow<'_, str>)>) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
    attrs.into_iter().map(|(n, v)| (own(n), own(v))).collect()
}

/// Parses a query page: a JSON array of objects (§4.2).
pub fn parse_page(bytes: &[u8]) -> Result<Page<'_>, PageError> {
    if bytes.len() > MAX_BODY_LEN {
        return Err(PageError::TooLarge { limit: MAX_BODY_LEN });
    }
    let ctx = Ctx::new(bytes);
    let builder = run(&ctx, PageSeed { ctx: &ctx })?;
    builder.finish()
}

/// Parses a search answer (§7.2): `[[page],[page],...]`, `[[]]` or `[]`. Empty inner arrays (a
/// source with nothing to send) are skipped.
pub fn parse_search(bytes: &[u8]) -> Result<Vec<Page<'_>>, PageError> {
    if bytes.len() > MAX_BODY_LEN {
        return Err(PageError::TooLarge { limit: MAX_BODY_LEN });
    }
    let ctx = Ctx::new(bytes);
    let builders = run(&ctx, SearchSeed { ctx: &ctx })?;
    builders.into_iter().map(Builder::finish).collect()
}

fn run<'de, S: DeserializeSeed<'de>>(ctx: &Ctx<'de>, seed: S) -> Result<S::Value, PageError> {
    // Valid UTF-8 (every real page) is checked once here, in one fast pass, and parsed as a
    // `str`: serde_json then skips its per-string UTF-8 check, which cost more than a third of
    // the parse on pages of short values. Anything else goes the byte way, so invalid input
    // gets the same error as before.
    let result = match std::str::from_utf8(ctx.input) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            seed.deserialize(&mut de).and_then(|value| de.end().map(|()| value))
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(ctx.input);
            seed.deserialize(&mut de).and_then(|value| de.end().map(|()| value))
        }
    };
    result.map_err(|e| ctx.error.take().unwrap_or_else(|| PageError::Json(e.to_string())))
}

// ---------------------------------------------------------------------------------------------
// Parse state
// ---------------------------------------------------------------------------------------------

/// State shared by all the seeds of one parse.
struct Ctx<'de> {
    input: &'de [u8],
    /// How many JSON numbers serde has handed over so far (their ordinal in the input).
    numbers_seen: Cell<usize>,
    /// Spans of all number literals of the input, computed on first need.
    number_spans: OnceCell<Vec<(usize, usize)>>,
    /// The structured error behind the serde error being propagated, if any.
    error: Cell<Option<PageError>>,
    /// Attribute count of the previous object: the capacity to reserve for the next one.
    attr_hint: Cell<usize>,
}

impl<'de> Ctx<'de> {
    fn new(input: &'de [u8]) -> Self {
        Ctx {
            input,
            numbers_seen: Cell::new(0),
            number_spans: OnceCell::new(),
            error: Cell::new(None),
            attr_hint: Cell::new(0),
        }
    }

    /// Records `err` as the cause of the parse failure and returns a serde error to propagate.
    fn fail<E: de::Error>(&self, err: PageError) -> E {
        let message = err.to_string();
        let previous = self.error.take();
        self.error.set(previous.or(Some(err)));
        E::custom(message)
    }

    fn type_error<E: de::Error>(&self, field: String, expected: &'static str) -> E {
        self.fail(PageError::Type { field, expected })
    }

    fn check_len<E: de::Error>(&self, s: &str, limit: usize) -> Result<(), E> {
        if s.len() > limit {
            Err(self.fail(PageError::TooLarge { limit }))
        } else {
            Ok(())
        }
    }

    fn next_number(&self) -> usize {
        let n = self.numbers_seen.get();
        self.numbers_seen.set(n.saturating_add(1));
        n
    }

    /// Literal text of the `ordinal`-th number of the input.
    fn number_text<E: de::Error>(&self, ordinal: usize) -> Result<&'de str, E> {
        let input = self.input;
        let spans = self.number_spans.get_or_init(|| number_spans(input));
        spans
            .get(ordinal)
            .and_then(|&(start, end)| input.get(start..end))
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .ok_or_else(|| E::custom("internal error: number literal not found"))
    }
}

/// Spans of the number literals of a JSON text, in order. Only meaningful on valid JSON (or a
/// valid prefix of it); never panics on anything.
fn number_spans(input: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'"' => {
                i += 1;
                while let Some(&c) = input.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = input.get(i) {
                    i += 1;
                }
                spans.push((start, i));
            }
            _ => i += 1,
        }
    }
    spans
}

/// A JSON scalar as handed over by serde.
enum Scalar<'de> {
    Str(Cow<'de, str>),
    Num { ordinal: usize, value: Num },
    Bool(bool),
    Null,
}

#[derive(Clone, Copy)]
enum Num {
    U64(u64),
    I64(i64),
    F64,
}

const EXPECT_COUNT: &str = "a non-negative integer";
const EXPECT_VERSION: &str = "a non-negative integer";
const EXPECT_STRING: &str = "a string";
const EXPECT_TOKEN: &str = "a string or a non-negative integer";
const EXPECT_I64: &str = "an integer";
const EXPECT_BOOL: &str = "\"true\", \"false\" or a boolean";
const EXPECT_VALUE: &str = "a string, number, boolean or null";
const EXPECT_ID: &str = "a string or a number";
const EXPECT_OBJECT: &str = "an object";
const EXPECT_LINK: &str = "an object with an \"l\" id";

impl<'de> Scalar<'de> {
    fn into_u64<E: de::Error>(self, ctx: &Ctx<'de>, field: &str) -> Result<u64, E> {
        match self {
            Scalar::Num { value: Num::U64(n), .. } => Ok(n),
            Scalar::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map_err(|_| ctx.type_error(field.to_owned(), EXPECT_COUNT))
            }
            _ => Err(ctx.type_error(field.to_owned(), EXPECT_COUNT)),
        }
    }

    fn into_i64<E: de::Error>(self, ctx: &Ctx<'de>, field: &str) -> Result<i64, E> {
        match self {
            Scalar::Num { value: Num::I64(n), .. } => Ok(n),
            Scalar::Num { value: Num::U64(n), .. } => {
                i64::try_from(n).map_err(|_| ctx.type_error(field.to_owned(), EXPECT_I64))
            }
            Scalar::Str(s) if is_integer_text(&s) => {
                s.parse().map_err(|_| ctx.type_error(field.to_owned(), EXPECT_I64))
            }
            _ => Err(ctx.type_error(field.to_owned(), EXPECT_I64)),
        }
    }

    fn into_string<E: de::Error>(
        self,
        ctx: &Ctx<'de>,
        field: &dyn Fn() -> String,
        limit: usize,
    ) -> Result<Cow<'de, str>, E> {
        match self {
            Scalar::Str(s) => {
                ctx.check_len(&s, limit)?;
                Ok(s)
            }
            _ => Err(ctx.type_error(field(), EXPECT_STRING)),
        }
    }

    /// String, or the literal text of a number.
    fn into_id<E: de::Error>(self, ctx: &Ctx<'de>, field: &dyn Fn() -> String) -> Result<Cow<'de, str>, E> {
        let id = match self {
            Scalar::Str(s) => s,
            Scalar::Num { ordinal, .. } => Cow::Borrowed(ctx.number_text(ordinal)?),
            _ => return Err(ctx.type_error(field(), EXPECT_ID)),
        };
        ctx.check_len(&id, MAX_ID_LEN)?;
        Ok(id)
    }
}

fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Page builder
// ---------------------------------------------------------------------------------------------

/// Half of an object error: the `<id>` key (attributes) or the `<id>-error` key (message).
enum ErrPart<'de> {
    Attrs(Vec<(Cow<'de, str>, Cow<'de, str>)>),
    Message(Cow<'de, str>),
}

type ErrParts<'de> = Vec<(Cow<'de, str>, ErrPart<'de>)>;

#[derive(Default)]
struct Builder<'de> {
    page: Page<'de>,
    version_seen: bool,
    elements: usize,
    create_errors: ErrParts<'de>,
    update_errors: ErrParts<'de>,
    delete_errors: ErrParts<'de>,
}

impl<'de> Builder<'de> {
    fn finish(self) -> Result<Page<'de>, PageError> {
        if !self.version_seen {
            return Err(PageError::Version(None));
        }
        let mut page = self.page;
        page.create_errors = merge_errors(self.create_errors);
        page.update_errors = merge_errors(self.update_errors);
        page.delete_errors = merge_errors(self.delete_errors);
        Ok(page)
    }
}

/// Merges `<id>` and `<id>-error` entries by id, in order of first appearance. A repeated
/// attributes entry extends the attributes; a repeated message replaces the message.
fn merge_errors(parts: ErrParts<'_>) -> Vec<ObjectError<'_>> {
    let mut slots = Vec::with_capacity(parts.len());
    let mut distinct = 0;
    {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(parts.len());
        for (id, _) in &parts {
            let slot = *index.entry(id.as_ref()).or_insert_with(|| {
                distinct += 1;
                distinct - 1
            });
            slots.push(slot);
        }
    }
    let mut merged: Vec<Option<ObjectError<'_>>> = (0..distinct).map(|_| None).collect();
    for ((id, part), slot) in parts.into_iter().zip(slots) {
        let Some(entry) = merged.get_mut(slot) else { continue };
        let error = entry.get_or_insert_with(|| ObjectError {
            id,
            message: Cow::Borrowed(""),
            attrs: Vec::new(),
        });
        match part {
            ErrPart::Attrs(attrs) if error.attrs.is_empty() => error.attrs = attrs,
            ErrPart::Attrs(attrs) => error.attrs.extend(attrs),
            ErrPart::Message(message) => error.message = message,
        }
    }
    merged.into_iter().flatten().collect()
}

// ---------------------------------------------------------------------------------------------
// Seeds and visitors
// ---------------------------------------------------------------------------------------------

/// Visitor methods that turn anything but a JSON object into a `PageError::Type`; the visitor
/// must have a `reject(&self) -> E` method.
macro_rules! reject_non_map {
    () => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.reject())
        }
    };
}

/// A map key (always a JSON string).
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// A scalar value; an array or object is a `PageError::Type` for `field`.
#[derive(Clone, Copy)]
struct ScalarSeed<'c, 'de, 'f> {
    ctx: &'c Ctx<'de>,
    field: &'f dyn Fn() -> String,
    expected: &'static str,
}

impl<'de> DeserializeSeed<'de> for ScalarSeed<'_, 'de, '_> {
    type Value = Scalar<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed<'_, 'de, '_> {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Num {
            ordinal: self.ctx.next_number(),
            value: Num::I64(v),
        })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Num {
            ordinal: self.ctx.next_number(),
            value: Num::U64(v),
        })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Num {
            ordinal: self.ctx.next_number(),
            value: Num::F64,
        })
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.ctx.type_error((self.field)(), self.expected))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(self.ctx.type_error((self.field)(), self.expected))
    }
}

/// Skips any value (of an unknown key), counting its numbers, up to `MAX_UNKNOWN_DEPTH` levels.
#[derive(Clone, Copy)]
struct IgnoreSeed<'c, 'de> {
    ctx: &'c Ctx<'de>,
    depth: usize,
}

impl<'c, 'de> IgnoreSeed<'c, 'de> {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > MAX_UNKNOWN_DEPTH {
            return Err(self.ctx.fail(PageError::TooLarge {
                limit: MAX_UNKNOWN_DEPTH,
            }));
        }
        Ok(IgnoreSeed { ctx: self.ctx, depth })
    }
}

impl<'de> DeserializeSeed<'de> for IgnoreSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IgnoreSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.ctx.next_number();
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.ctx.next_number();
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.ctx.next_number();
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// The whole query page: an array of element objects.
struct PageSeed<'c, 'de> {
    ctx: &'c Ctx<'de>,
}

impl<'de> DeserializeSeed<'de> for PageSeed<'_, 'de> {
    type Value = Builder<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PageSeed<'_, 'de> {
    type Value = Builder<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a page (an array of objects)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut builder = Builder::default();
        while seq
            .next_element_seed(ElementSeed {
                ctx: self.ctx,
                builder: &mut builder,
            })?
            .is_some()
        {
            builder.elements += 1;
        }
        Ok(builder)
    }
}

/// A search answer: an array of pages; empty pages are dropped.
struct SearchSeed<'c, 'de> {
    ctx: &'c Ctx<'de>,
}

impl<'de> DeserializeSeed<'de> for SearchSeed<'_, 'de> {
    type Value = Vec<Builder<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SearchSeed<'_, 'de> {
    type Value = Vec<Builder<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a search answer (an array of pages)")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut pages = Vec::new();
        while let Some(builder) = seq.next_element_seed(PageSeed { ctx: self.ctx })? {
            if builder.elements > 0 {
                pages.push(builder);
            }
        }
        Ok(pages)
    }
}

/// One element of a page: an object whose keys are header elements or commands.
struct ElementSeed<'c, 'de, 'b> {
    ctx: &'c Ctx<'de>,
    builder: &'b mut Builder<'de>,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, 'de, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed<'_, 'de, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a page element (an object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let b = self.builder;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key.as_ref() {
                "version" => {
                    let v = map.next_value_seed(scalar(ctx, &|| "version".to_owned(), EXPECT_VERSION))?;
                    let version = v.into_u64(ctx, "version")?;
                    if version != SYNC_VERSION {
                        return Err(ctx.fail(PageError::Version(Some(version))));
                    }
                    b.version_seen = true;
                }
                "token" => {
                    let v = map.next_value_seed(scalar(ctx, &|| "token".to_owned(), EXPECT_TOKEN))?;
                    b.page.token = match v {
                        Scalar::Str(s) => {
                            ctx.check_len(&s, MAX_ID_LEN)?;
                            s
                        }
                        Scalar::Num { value: Num::U64(n), .. } => Cow::Owned(n.to_string()),
                        _ => return Err(ctx.type_error("token".to_owned(), EXPECT_TOKEN)),
                    };
                }
                "count" => {
                    let v = map.next_value_seed(scalar(ctx, &|| "count".to_owned(), EXPECT_COUNT))?;
                    b.page.count = v.into_u64(ctx, "count")?;
                }
                "progress_count" => {
                    let v = map.next_value_seed(scalar(ctx, &|| "progress_count".to_owned(), EXPECT_COUNT))?;
                    b.page.progress_count = v.into_u64(ctx, "progress_count")?;
                }
                "total_count" => {
                    let v = map.next_value_seed(scalar(ctx, &|| "total_count".to_owned(), EXPECT_COUNT))?;
                    b.page.total_count = v.into_u64(ctx, "total_count")?;
                }
                "source" => {
                    let field = || "source".to_owned();
                    let v = map.next_value_seed(scalar(ctx, &field, EXPECT_STRING))?;
                    b.page.source = Some(v.into_string(ctx, &field, MAX_ID_LEN)?);
                }
                "refresh_time" => {
                    let v = map.next_value_seed(scalar(ctx, &|| "refresh_time".to_owned(), EXPECT_I64))?;
                    b.page.refresh_time = Some(v.into_i64(ctx, "refresh_time")?);
                }
                "metadata" => {
                    let field = || "metadata".to_owned();
                    let v = map.next_value_seed(scalar(ctx, &field, EXPECT_STRING))?;
                    b.page.metadata = Some(v.into_string(ctx, &field, MAX_VALUE_LEN)?);
                }
                "schema-changed" => {
                    let v = map.next_value_seed(scalar(ctx, &|| "schema-changed".to_owned(), EXPECT_BOOL))?;
                    b.page.schema_changed = match v {
                        Scalar::Bool(flag) => flag,
                        Scalar::Str(s) => s != "false",
                        _ => return Err(ctx.type_error("schema-changed".to_owned(), EXPECT_BOOL)),
                    };
                }
                "insert" => map.next_value_seed(ObjectsSeed {
                    ctx,
                    cmd: "insert",
                    out: &mut b.page.inserts,
                })?,
                "delete" => map.next_value_seed(ObjectsSeed {
                    ctx,
                    cmd: "delete",
                    out: &mut b.page.deletes,
                })?,
                "update-rollback" => map.next_value_seed(ObjectsSeed {
                    ctx,
                    cmd: "update-rollback",
                    out: &mut b.page.update_rollback,
                })?,
                "links" => map.next_value_seed(LinksSeed {
                    ctx,
                    out: &mut b.page.links,
                })?,
                "create-error" => map.next_value_seed(ErrorsSeed {
                    ctx,
                    cmd: "create-error",
                    out: &mut b.create_errors,
                })?,
                "update-error" => map.next_value_seed(ErrorsSeed {
                    ctx,
                    cmd: "update-error",
                    out: &mut b.update_errors,
                })?,
                "delete-error" => map.next_value_seed(ErrorsSeed {
                    ctx,
                    cmd: "delete-error",
                    out: &mut b.delete_errors,
                })?,
                "source-error" => {
                    let first = map.next_value_seed(KindErrorSeed {
                        ctx,
                        cmd: "source-error",
                    })?;
                    if b.page.source_error.is_none() {
                        b.page.source_error = first;
                    }
                }
                "search-error" => {
                    let first = map.next_value_seed(KindErrorSeed {
                        ctx,
                        cmd: "search-error",
                    })?;
                    if b.page.search_error.is_none() {
                        b.page.search_error = first;
                    }
                }
                _ => map.next_value_seed(IgnoreSeed { ctx, depth: 0 })?,
            }
        }
        Ok(())
    }
}

fn scalar<'c, 'de, 'f>(
    ctx: &'c Ctx<'de>,
    field: &'f dyn Fn() -> String,
    expected: &'static str,
) -> ScalarSeed<'c, 'de, 'f> {
    ScalarSeed { ctx, field, expected }
}

/// `insert`, `delete`, `update-rollback`: `{"<id>":{attrs}, ...}`.
struct ObjectsSeed<'c, 'de, 'o> {
    ctx: &'c Ctx<'de>,
    cmd: &'static str,
    out: &'o mut Vec<ObjectAttrs<'de>>,
}

impl<'de> ObjectsSeed<'_, 'de, '_> {
    fn reject<E: de::Error>(&self) -> E {
        self.ctx.type_error(self.cmd.to_owned(), EXPECT_OBJECT)
    }
}

impl<'de> DeserializeSeed<'de> for ObjectsSeed<'_, 'de, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectsSeed<'_, 'de, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_OBJECT)
    }
    reject_non_map!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(id) = map.next_key_seed(KeySeed)? {
            ctx.check_len(&id, MAX_ID_LEN)?;
            let attrs = map.next_value_seed(AttrsSeed {
                ctx,
                cmd: self.cmd,
                id: &id,
            })?;
            self.out.push(ObjectAttrs { id, attrs });
        }
        Ok(())
    }
}

/// The attributes of one object: `{"<attr>":"<value>", ...}`.
struct AttrsSeed<'c, 'de, 'i> {
    ctx: &'c Ctx<'de>,
    cmd: &'static str,
    id: &'i str,
}

impl<'de> AttrsSeed<'_, 'de, '_> {
    fn reject<E: de::Error>(&self) -> E {
        self.ctx.type_error(format!("{}/{}", self.cmd, self.id), EXPECT_OBJECT)
    }
}

impl<'de> DeserializeSeed<'de> for AttrsSeed<'_, 'de, '_> {
    type Value = Vec<(Cow<'de, str>, Cow<'de, str>)>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AttrsSeed<'_, 'de, '_> {
    type Value = Vec<(Cow<'de, str>, Cow<'de, str>)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_OBJECT)
    }
    reject_non_map!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut attrs = Vec::with_capacity(ctx.attr_hint.get());
        while let Some(name) = map.next_key_seed(KeySeed)? {
            ctx.check_len(&name, MAX_NAME_LEN)?;
            let field = || format!("{}/{}/{}", self.cmd, self.id, name);
            let value = match map.next_value_seed(scalar(ctx, &field, EXPECT_VALUE))? {
                Scalar::Str(s) => {
                    ctx.check_len(&s, MAX_VALUE_LEN)?;
                    s
                }
                Scalar::Num { ordinal, .. } => {
                    let text = ctx.number_text(ordinal)?;
                    ctx.check_len(text, MAX_VALUE_LEN)?;
                    Cow::Borrowed(text)
                }
                Scalar::Bool(true) => Cow::Borrowed("true"),
                Scalar::Bool(false) => Cow::Borrowed("false"),
                Scalar::Null => continue,
            };
            attrs.push((name, value));
        }
        ctx.attr_hint.set(attrs.len());
        Ok(attrs)
    }
}

/// `links`: `{"<temp id>":{"l":"<id>"}, ...}`.
struct LinksSeed<'c, 'de, 'o> {
    ctx: &'c Ctx<'de>,
    out: &'o mut Vec<Link<'de>>,
}

impl<'de> LinksSeed<'_, 'de, '_> {
    fn reject<E: de::Error>(&self) -> E {
        self.ctx.type_error("links".to_owned(), EXPECT_OBJECT)
    }
}

impl<'de> DeserializeSeed<'de> for LinksSeed<'_, 'de, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LinksSeed<'_, 'de, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_OBJECT)
    }
    reject_non_map!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(temp_id) = map.next_key_seed(KeySeed)? {
            ctx.check_len(&temp_id, MAX_ID_LEN)?;
            let id = map.next_value_seed(LinkSeed { ctx, temp_id: &temp_id })?;
            self.out.push(Link { temp_id, id });
        }
        Ok(())
    }
}

/// One link target: `{"l":"<id>"}` (other keys ignored).
struct LinkSeed<'c, 'de, 'i> {
    ctx: &'c Ctx<'de>,
    temp_id: &'i str,
}

impl<'de> LinkSeed<'_, 'de, '_> {
    fn field(&self) -> String {
        format!("links/{}", self.temp_id)
    }
    fn reject<E: de::Error>(&self) -> E {
        self.ctx.type_error(self.field(), EXPECT_LINK)
    }
}

impl<'de> DeserializeSeed<'de> for LinkSeed<'_, 'de, '_> {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for LinkSeed<'_, 'de, '_> {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_LINK)
    }
    reject_non_map!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let field = || format!("{}/l", self.field());
        let mut id = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key == "l" {
                let v = map.next_value_seed(scalar(ctx, &field, EXPECT_ID))?;
                id = Some(v.into_id(ctx, &field)?);
            } else {
                map.next_value_seed(IgnoreSeed { ctx, depth: 1 })?;
            }
        }
        id.ok_or_else(|| self.reject())
    }
}

/// `create-error`, `update-error`, `delete-error`: `{"<id>":{attrs},"<id>-error":{"message":..}}`.
struct ErrorsSeed<'c, 'de, 'o> {
    ctx: &'c Ctx<'de>,
    cmd: &'static str,
    out: &'o mut ErrParts<'de>,
}

impl<'de> ErrorsSeed<'_, 'de, '_> {
    fn reject<E: de::Error>(&self) -> E {
        self.ctx.type_error(self.cmd.to_owned(), EXPECT_OBJECT)
    }
}

impl<'de> DeserializeSeed<'de> for ErrorsSeed<'_, 'de, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ErrorsSeed<'_, 'de, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_OBJECT)
    }
    reject_non_map!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match strip_error_suffix(key) {
                Ok(id) => {
                    ctx.check_len(&id, MAX_ID_LEN)?;
                    let field = || format!("{}/{}-error", self.cmd, id);
                    let message = map.next_value_seed(MessageSeed { ctx, field: &field })?;
                    self.out.push((id, ErrPart::Message(message)));
                }
                Err(id) => {
                    ctx.check_len(&id, MAX_ID_LEN)?;
                    let attrs = map.next_value_seed(AttrsSeed {
                        ctx,
                        cmd: self.cmd,
                        id: &id,
                    })?;
                    self.out.push((id, ErrPart::Attrs(attrs)));
                }
            }
        }
        Ok(())
    }
}

/// `Ok(id)` for a key `<id>-error`, `Err(key)` for any other key.
fn strip_error_suffix(key: Cow<'_, str>) -> Result<Cow<'_, str>, Cow<'_, str>> {
    const SUFFIX: &str = "-error";
    match key {
        Cow::Borrowed(s) => s.strip_suffix(SUFFIX).map(Cow::Borrowed).ok_or(Cow::Borrowed(s)),
        Cow::Owned(mut s) => {
            if s.ends_with(SUFFIX) {
                s.truncate(s.len() - SUFFIX.len());
                Ok(Cow::Owned(s))
            } else {
                Err(Cow::Owned(s))
            }
        }
    }
}

/// `{"message":".."}` (other keys ignored; no message = `""`).
struct MessageSeed<'c, 'de, 'f> {
    ctx: &'c Ctx<'de>,
    field: &'f dyn Fn() -> String,
}

impl<'de> MessageSeed<'_, 'de, '_> {
    fn reject<E: de::Error>(&self) -> E {
        self.ctx.type_error((self.field)(), EXPECT_OBJECT)
    }
}

impl<'de> DeserializeSeed<'de> for MessageSeed<'_, 'de, '_> {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MessageSeed<'_, 'de, '_> {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_OBJECT)
    }
    reject_non_map!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let field = || format!("{}/message", (self.field)());
        let mut message = Cow::Borrowed("");
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if key == "message" {
                let v = map.next_value_seed(scalar(ctx, &field, EXPECT_STRING))?;
                message = v.into_string(ctx, &field, MAX_VALUE_LEN)?;
            } else {
                map.next_value_seed(IgnoreSeed { ctx, depth: 1 })?;
            }
        }
        Ok(message)
    }
}

/// `source-error`, `search-error`: `{"<kind>":{"message":..}, ...}`; the first entry is kept.
struct KindErrorSeed<'c, 'de> {
    ctx: &'c Ctx<'de>,
    cmd: &'static str,
}

impl<'de> KindErrorSeed<'_, 'de> {
    fn reject<E: de::Error>(&self) -> E {
        self.ctx.type_error(self.cmd.to_owned(), EXPECT_OBJECT)
    }
}

impl<'de> DeserializeSeed<'de> for KindErrorSeed<'_, 'de> {
    type Value = Option<KindError<'de>>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KindErrorSeed<'_, 'de> {
    type Value = Option<KindError<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECT_OBJECT)
    }
    reject_non_map!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut first = None;
        while let Some(kind) = map.next_key_seed(KeySeed)? {
            ctx.check_len(&kind, MAX_NAME_LEN)?;
            let field = || format!("{}/{}", self.cmd, kind);
            let message = map.next_value_seed(MessageSeed { ctx, field: &field })?;
            if first.is_none() {
                first = Some(KindError { kind, message });
            }
        }
        Ok(first)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    const PRODUCT_PAGE: &str = r#"[{"version":3},{"token":"564744267555226"},{"count":50},{"progress_count":0},{"total_count":300},{"insert":{"192":{"name":"Product 192","brand":"Apple","price":"202.92","quantity":"44","sku":"SKU-00192"},"213":{"name":"Product 213","brand":"Sony","price":"223.13","quantity":"41","sku":"SKU-00213"},"86":{"name":"Product 86","brand":"HTC","price":"96.86","quantity":"2","sku":"SKU-00086"}}}]"#;

    const RESULT_PAGE: &str = r#"[{"version":3},{"token":"564744268446775"},{"count":0},{"progress_count":0},{"total_count":301},{"links":{"1795512300001":{"l":"1001"}},"create-error":{"1795512300002":{"name":"error","brand":"Acme","price":"2.99","quantity":"1","sku":"SKU-NEW-2"},"1795512300002-error":{"message":"Product name 'error' is not allowed"}},"update-error":{"20":{"name":"conflict"},"20-error":{"message":"Update conflict: name 'conflict' rejected"}},"delete-error":{"13-error":{"message":"Product 13 cannot be deleted"},"13":{"name":"Product 13","brand":"Samsung","price":"23.13","quantity":"41","sku":"SKU-00013"}},"update-rollback":{"20":{"name":"Product 20","brand":"LG","price":"30.20","quantity":"40","sku":"SKU-00020"}}}]"#;

    const SEARCH_PAGE: &str = r#"[[{"version":3},{"token":"564744269307964"},{"source":"Product"},{"count":50},{"insert":{"202":{"name":"Product 202"}}}]]"#;

    fn page(body: &str) -> Page<'_> {
        match parse_page(body.as_bytes()) {
            Ok(page) => page,
            Err(e) => panic!("{body}: {e}"),
        }
    }

    fn page_of(body: String) -> Page<'static> {
        page(&body).into_owned()
    }

    fn err(body: &str) -> PageError {
        match parse_page(body.as_bytes()) {
            Ok(page) => panic!("{body}: accepted as {page:?}"),
            Err(e) => e,
        }
    }

    fn wrap(commands: &str) -> String {
        format!(
            r#"[{{"version":3}},{{"token":""}},{{"count":0}},{{"progress_count":0}},{{"total_count":0}},{commands}]"#
        )
    }

    fn attrs<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        pairs
            .iter()
            .map(|&(n, v)| (Cow::Borrowed(n), Cow::Borrowed(v)))
            .collect()
    }

    fn type_field(e: PageError) -> String {
        match e {
            PageError::Type { field, .. } => field,
            other => panic!("expected a Type error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_product_page_borrowing_strings() {
        let p = page(PRODUCT_PAGE);
        assert_eq!(p.token, "564744267555226");
        assert!(matches!(p.token, Cow::Borrowed(_)));
        assert_eq!((p.count, p.progress_count, p.total_count), (50, 0, 300));
        assert!(!p.is_final());
        assert_eq!(p.object_count(), 3);
        assert!(!p.has_server_errors());
        let ids: Vec<&str> = p.inserts.iter().map(|o| o.id.as_ref()).collect();
        assert_eq!(ids, ["192", "213", "86"]);
        assert_eq!(
            p.inserts[0].attrs,
            attrs(&[
                ("name", "Product 192"),
                ("brand", "Apple"),
                ("price", "202.92"),
                ("quantity", "44"),
                ("sku", "SKU-00192")
            ])
        );
        assert_eq!(p.inserts[2].get("price"), Some("96.86"));
        assert!(
            p.inserts
                .iter()
                .flat_map(|o| &o.attrs)
                .all(|(n, v)| matches!((n, v), (Cow::Borrowed(_), Cow::Borrowed(_))))
        );
        assert!(p.deletes.is_empty() && p.links.is_empty() && p.source.is_none() && !p.schema_changed);
        let owned: Page<'static> = p.clone().into_owned();
        assert_eq!(owned, p);
    }

    #[test]
    fn end_page() {
        let p = page(r#"[{"version":3},{"token":""},{"count":0},{"progress_count":0},{"total_count":300},{}]"#);
        assert!(p.is_final());
        assert_eq!(p.total_count, 300);
        assert_eq!(
            p,
            Page {
                total_count: 300,
                ..Page::default()
            }
        );
    }

    #[test]
    fn result_page_links_errors_rollback() {
        let p = page(RESULT_PAGE);
        assert!(p.has_server_errors());
        assert_eq!(
            p.links,
            [Link {
                temp_id: "1795512300001".into(),
                id: "1001".into()
            }]
        );
        assert_eq!(
            p.create_errors,
            [ObjectError {
                id: "1795512300002".into(),
                message: "Product name 'error' is not allowed".into(),
                attrs: attrs(&[
                    ("name", "error"),
                    ("brand", "Acme"),
                    ("price", "2.99"),
                    ("quantity", "1"),
                    ("sku", "SKU-NEW-2")
                ]),
            }]
        );
        assert_eq!(
            p.update_errors,
            [ObjectError {
                id: "20".into(),
                message: "Update conflict: name 'conflict' rejected".into(),
                attrs: attrs(&[("name", "conflict")]),
            }]
        );
        // "-error" key first.
        assert_eq!(p.delete_errors.len(), 1);
        assert_eq!(p.delete_errors[0].id, "13");
        assert_eq!(p.delete_errors[0].message, "Product 13 cannot be deleted");
        assert_eq!(p.delete_errors[0].get("sku"), Some("SKU-00013"));
        assert_eq!(p.update_rollback.len(), 1);
        assert_eq!(p.update_rollback[0].get("name"), Some("Product 20"));
    }

    #[test]
    fn elements_in_any_order_and_split_or_merged_commands() {
        let a = page(
            r#"[{"insert":{"1":{"a":"x"}}},{"count":1},{"token":"7"},{"version":3},{"total_count":9},{"progress_count":0}]"#,
        );
        let b = page(r#"[{"version":3,"token":"7","count":1,"total_count":9,"insert":{"1":{"a":"x"}}}]"#);
        assert_eq!(a, b);
        assert_eq!(
            a.inserts,
            [ObjectAttrs {
                id: "1".into(),
                attrs: attrs(&[("a", "x")])
            }]
        );
        // Repeated command keys accumulate.
        let c = page(r#"[{"version":3},{"insert":{"1":{"a":"x"}}},{"insert":{"2":{"b":"y"}}}]"#);
        assert_eq!(c.inserts.len(), 2);
    }

    #[test]
    fn unknown_keys_are_ignored_and_their_numbers_do_not_shift_literals() {
        let body = r#"[{"version":3},{"future":{"a":[1,2.5,{"b":-3e2}],"c":null,"d":true}},{"token":""},
            {"count":1},{"progress_count":0},{"total_count":1},
            {"frobnicate":[[7]],"insert":{"1":{"price":19.90,"qty":3}},"zz":4.25,"delete":{"2":{"w":0.5}}}]"#;
        let p = page(body);
        assert_eq!(
            p.inserts,
            [ObjectAttrs {
                id: "1".into(),
                attrs: attrs(&[("price", "19.90"), ("qty", "3")])
            }]
        );
        assert_eq!(
            p.deletes,
            [ObjectAttrs {
                id: "2".into(),
                attrs: attrs(&[("w", "0.5")])
            }]
        );
        let q = page(r#"[{"version":3},{"refresh_time":1700000000,"source":"Product","metadata":"{\"a\":1}"}]"#);
        assert_eq!(q.refresh_time, Some(1_700_000_000));
        assert_eq!(q.source.as_deref(), Some("Product"));
        assert_eq!(q.metadata.as_deref(), Some(r#"{"a":1}"#));
        assert!(matches!(q.metadata, Some(Cow::Owned(_))));
    }

    #[test]
    fn attribute_values_keep_their_literal_text() {
        let body = wrap(
            r#"{"insert":{"1":{"a":44,"b":1.50,"c":-0,"d":1E+10,"e":12345678901234567890123,"f":true,"g":false,"h":null,"\u0041x":2.50,"i":-7,"j":""}}}"#,
        );
        let p = page(&body);
        assert_eq!(
            p.inserts[0].attrs,
            attrs(&[
                ("a", "44"),
                ("b", "1.50"),
                ("c", "-0"),
                ("d", "1E+10"),
                ("e", "12345678901234567890123"),
                ("f", "true"),
                ("g", "false"),
                ("Ax", "2.50"),
                ("i", "-7"),
                ("j", "")
            ])
        );
        assert!(matches!(p.inserts[0].attrs[7].0, Cow::Owned(_)));
        assert!(matches!(p.inserts[0].attrs[7].1, Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_are_decoded() {
        let p = page_of(wrap(
            r#"{"insert":{"a\"b":{"k\\":"line\nnext \u00e9\ud83d\ude00 \/"}}}"#,
        ));
        assert_eq!(p.inserts[0].id, "a\"b");
        assert_eq!(p.inserts[0].attrs, attrs(&[("k\\", "line\nnext é😀 /")]));
        assert!(matches!(p.inserts[0].id, Cow::Owned(_)));
    }

    #[test]
    fn lenient_scalars() {
        let p = page(
            r#"[{"version":"3"},{"token":564744267555226},{"count":"50"},{"total_count":"300"},{"refresh_time":"-5"}]"#,
        );
        assert_eq!(p.token, "564744267555226");
        assert_eq!((p.count, p.total_count, p.refresh_time), (50, 300, Some(-5)));
        assert!(page_of(wrap(r#"{"schema-changed":"true"}"#)).schema_changed);
        assert!(page_of(wrap(r#"{"schema-changed":true}"#)).schema_changed);
        assert!(!page_of(wrap(r#"{"schema-changed":"false"}"#)).schema_changed);
        let l = page_of(wrap(r#"{"links":{"9":{"l":1001,"x":[1]}}}"#));
        assert_eq!(
            l.links,
            [Link {
                temp_id: "9".into(),
                id: "1001".into()
            }]
        );
    }

    #[test]
    fn version_errors() {
        assert_eq!(err(r#"[{"version":2},{"token":""}]"#), PageError::Version(Some(2)));
        assert_eq!(err(r#"[{"token":""},{"count":0}]"#), PageError::Version(None));
        assert_eq!(err("[]"), PageError::Version(None));
        assert_eq!(err("[{}]"), PageError::Version(None));
        assert_eq!(err(r#"[{"version":3},{"version":4}]"#), PageError::Version(Some(4)));
        assert_eq!(type_field(err(r#"[{"version":"three"}]"#)), "version");
        assert_eq!(type_field(err(r#"[{"version":3.0}]"#)), "version");
        assert_eq!(type_field(err(r#"[{"version":-3}]"#)), "version");
        assert!(err(r#"[{"version":2}]"#).to_string().contains("version 2"));
    }

    #[test]
    fn type_errors() {
        assert_eq!(type_field(err(r#"[{"version":3},{"count":{"n":1}}]"#)), "count");
        assert_eq!(type_field(err(r#"[{"version":3},{"count":-1}]"#)), "count");
        assert_eq!(type_field(err(r#"[{"version":3},{"count":1.5}]"#)), "count");
        assert_eq!(type_field(err(r#"[{"version":3},{"count":"1x"}]"#)), "count");
        assert_eq!(
            type_field(err(r#"[{"version":3},{"count":"99999999999999999999999"}]"#)),
            "count"
        );
        assert_eq!(
            type_field(err(r#"[{"version":3},{"total_count":null}]"#)),
            "total_count"
        );
        assert_eq!(
            type_field(err(r#"[{"version":3},{"progress_count":[0]}]"#)),
            "progress_count"
        );
        assert_eq!(type_field(err(r#"[{"version":3},{"token":{"t":1}}]"#)), "token");
        assert_eq!(type_field(err(r#"[{"version":3},{"token":true}]"#)), "token");
        assert_eq!(type_field(err(r#"[{"version":3},{"token":-1}]"#)), "token");
        assert_eq!(type_field(err(r#"[{"version":3},{"source":1}]"#)), "source");
        assert_eq!(
            type_field(err(r#"[{"version":3},{"refresh_time":1.5}]"#)),
            "refresh_time"
        );
        assert_eq!(type_field(err(&wrap(r#"{"metadata":{"a":1}}"#))), "metadata");
        assert_eq!(type_field(err(&wrap(r#"{"schema-changed":1}"#))), "schema-changed");
        assert_eq!(type_field(err(&wrap(r#"{"insert":{"1":{"a":["x"]}}}"#))), "insert/1/a");
        assert_eq!(
            type_field(err(&wrap(r#"{"delete":{"1":{"a":{"x":1}}}}"#))),
            "delete/1/a"
        );
        assert_eq!(type_field(err(&wrap(r#"{"insert":{"1":"x"}}"#))), "insert/1");
        assert_eq!(type_field(err(&wrap(r#"{"insert":[]}"#))), "insert");
        assert_eq!(type_field(err(&wrap(r#"{"links":{"9":{"x":"1"}}}"#))), "links/9");
        assert_eq!(type_field(err(&wrap(r#"{"links":{"9":{"l":null}}}"#))), "links/9/l");
        assert_eq!(type_field(err(&wrap(r#"{"links":"x"}"#))), "links");
        assert_eq!(
            type_field(err(&wrap(r#"{"update-error":{"9-error":{"message":5}}}"#))),
            "update-error/9-error/message"
        );
        assert_eq!(
            type_field(err(&wrap(r#"{"update-error":{"9-error":"boom"}}"#))),
            "update-error/9-error"
        );
        assert_eq!(
            type_field(err(&wrap(r#"{"update-rollback":{"9":{"a":[]}}}"#))),
            "update-rollback/9/a"
        );
        assert_eq!(
            type_field(err(&wrap(r#"{"source-error":{"query-error":"boom"}}"#))),
            "source-error/query-error"
        );
        assert_eq!(type_field(err(&wrap(r#"{"search-error":[]}"#))), "search-error");
    }

    #[test]
    fn shape_errors_are_json_errors() {
        for body in [
            "",
            "   ",
            "{}",
            "null",
            "3",
            "\"page\"",
            "[1]",
            "[[]]",
            r#"[{"version":3},"token"]"#,
            r#"[{"version":3},]"#,
            r#"[{"version":3}] x"#,
            r#"[{"version":3}][]"#,
            r#"[{"version":3}"#,
            r#"[{"version":3,}]"#,
            r#"[{'version':3}]"#,
            r#"[{"version":03}]"#,
            "[{\"version\":3},{\"token\":\"a\u{1}b\"}]",
            r#"[{"version":3},{"token":"\ud800"}]"#,
            r#"[{"version":3},{"token":"\x"}]"#,
            "Unknown client",
            "<!DOCTYPE html>",
        ] {
            match parse_page(body.as_bytes()) {
                Err(PageError::Json(message)) => assert!(!message.is_empty()),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        assert!(matches!(
            parse_page(b"[{\"version\":3},{\"token\":\"\xff\"}]"),
            Err(PageError::Json(_))
        ));
        match parse_page(br#"[{"version":3},"token"]"#) {
            Err(PageError::Json(m)) => assert!(m.contains("column"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Trailing whitespace is fine.
        assert!(parse_page(b" [{\"version\":3}] \n").is_ok());
    }

    #[test]
    fn object_error_merging() {
        let p = page_of(wrap(
            r#"{"create-error":{"a-error":{"message":"m1","code":7},"b":{"x":"1"},"a":{"y":"2"},"c-error":{"message":"m3"},"d-error":{}},
                "delete-error":{"z":{"k":"v"}},
                "update-error":{}}"#,
        ));
        assert_eq!(
            p.create_errors,
            [
                ObjectError {
                    id: "a".into(),
                    message: "m1".into(),
                    attrs: attrs(&[("y", "2")])
                },
                ObjectError {
                    id: "b".into(),
                    message: "".into(),
                    attrs: attrs(&[("x", "1")])
                },
                ObjectError {
                    id: "c".into(),
                    message: "m3".into(),
                    attrs: vec![]
                },
                ObjectError {
                    id: "d".into(),
                    message: "".into(),
                    attrs: vec![]
                },
            ]
        );
        assert_eq!(
            p.delete_errors,
            [ObjectError {
                id: "z".into(),
                message: "".into(),
                attrs: attrs(&[("k", "v")])
            }]
        );
        assert!(p.update_errors.is_empty());
        // An escaped "-error" key is recognised too.
        let q = page_of(wrap(
            r#"{"update-error":{"\u0031-error":{"message":"m"},"1":{"a":"b"}}}"#,
        ));
        assert_eq!(
            q.update_errors,
            [ObjectError {
                id: "1".into(),
                message: "m".into(),
                attrs: attrs(&[("a", "b")])
            }]
        );
    }

    #[test]
    fn kind_errors_keep_the_first_entry() {
        let p = page_of(wrap(
            r#"{"source-error":{"query-error":{"message":"Please set uri"},"login-error":{"message":"no"}}}"#,
        ));
        assert_eq!(
            p.source_error,
            Some(KindError {
                kind: "query-error".into(),
                message: "Please set uri".into()
            })
        );
        assert!(p.has_server_errors());
        assert_eq!(page_of(wrap(r#"{"source-error":{}}"#)).source_error, None);
        let q = page_of(wrap(r#"{"search-error":{"search-error":{}}}"#));
        assert_eq!(
            q.search_error,
            Some(KindError {
                kind: "search-error".into(),
                message: "".into()
            })
        );
    }

    #[test]
    fn search_answers() {
        assert_eq!(parse_search(b"[]"), Ok(vec![]));
        assert_eq!(parse_search(b"[[]]"), Ok(vec![]));
        assert_eq!(parse_search(b" [ [ ] , [ ] ] "), Ok(vec![]));
        let pages = parse_search(SEARCH_PAGE.as_bytes()).expect("search page");
        assert_eq!(pages.len(), 1);
        assert_eq!(pages[0].token, "564744269307964");
        assert_eq!(pages[0].source.as_deref(), Some("Product"));
        assert_eq!(
            (pages[0].count, pages[0].total_count, pages[0].progress_count),
            (50, 0, 0)
        );
        let inner = &SEARCH_PAGE[1..SEARCH_PAGE.len() - 1];
        let two = format!("[[],{inner},[{{\"version\":3}},{{\"source\":\"Customer\"}}]]");
        let pages = parse_search(two.as_bytes()).expect("two pages");
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[1].source.as_deref(), Some("Customer"));
        let e = parse_search(
            br#"[[{"version":3},{"source":"Product"},{"search-error":{"search-error":{"message":"Search error - invalid token"}}}]]"#,
        )
        .expect("search error");
        assert_eq!(e[0].token, "");
        assert_eq!(
            e[0].search_error,
            Some(KindError {
                kind: "search-error".into(),
                message: "Search error - invalid token".into()
            })
        );
        assert!(matches!(parse_search(b"[{}]"), Err(PageError::Json(_))));
        assert!(matches!(parse_search(b"{}"), Err(PageError::Json(_))));
        assert!(matches!(parse_search(b""), Err(PageError::Json(_))));
        assert!(matches!(parse_search(b"[[1]]"), Err(PageError::Json(_))));
        assert!(matches!(parse_search(b"[[]"), Err(PageError::Json(_))));
        assert_eq!(parse_search(b"[[{}]]"), Err(PageError::Version(None)));
        assert_eq!(
            parse_search(br#"[[{"version":3}],[{"version":1}]]"#),
            Err(PageError::Version(Some(1)))
        );
        // A query page is not a search answer and vice versa.
        assert!(parse_search(PRODUCT_PAGE.as_bytes()).is_err());
        assert!(parse_page(SEARCH_PAGE.as_bytes()).is_err());
    }

    #[test]
    fn limits() {
        let huge = vec![0u8; MAX_BODY_LEN + 1];
        assert_eq!(parse_page(&huge), Err(PageError::TooLarge { limit: MAX_BODY_LEN }));
        assert_eq!(parse_search(&huge), Err(PageError::TooLarge { limit: MAX_BODY_LEN }));

        let value = |len: usize| wrap(&format!(r#"{{"insert":{{"1":{{"a":"{}"}}}}}}"#, "v".repeat(len)));
        assert_eq!(page_of(value(MAX_VALUE_LEN)).inserts[0].attrs[0].1.len(), MAX_VALUE_LEN);
        assert_eq!(
            err(&value(MAX_VALUE_LEN + 1)),
            PageError::TooLarge { limit: MAX_VALUE_LEN }
        );
        let escaped = wrap(&format!(r#"{{"metadata":"{}\n"}}"#, "m".repeat(MAX_VALUE_LEN)));
        assert_eq!(err(&escaped), PageError::TooLarge { limit: MAX_VALUE_LEN });
        let number = wrap(&format!(
            r#"{{"insert":{{"1":{{"a":0.{}}}}}}}"#,
            "0".repeat(MAX_VALUE_LEN - 1)
        ));
        assert_eq!(err(&number), PageError::TooLarge { limit: MAX_VALUE_LEN });
        // serde_json rejects numbers beyond the f64 range.
        assert!(matches!(
            err(&wrap(r#"{"insert":{"1":{"a":1e400}}}"#)),
            PageError::Json(_)
        ));

        let id = |len: usize| wrap(&format!(r#"{{"delete":{{"{}":{{}}}}}}"#, "9".repeat(len)));
        assert_eq!(page_of(id(MAX_ID_LEN)).deletes[0].id.len(), MAX_ID_LEN);
        assert_eq!(err(&id(MAX_ID_LEN + 1)), PageError::TooLarge { limit: MAX_ID_LEN });
        let long = "x".repeat(MAX_ID_LEN + 1);
        for commands in [
            format!(r#"{{"links":{{"{long}":{{"l":"1"}}}}}}"#),
            format!(r#"{{"links":{{"1":{{"l":"{long}"}}}}}}"#),
            format!(r#"{{"create-error":{{"{long}-error":{{}}}}}}"#),
            format!(r#"{{"update-rollback":{{"{long}":{{}}}}}}"#),
        ] {
            assert_eq!(err(&wrap(&commands)), PageError::TooLarge { limit: MAX_ID_LEN });
        }
        assert_eq!(
            err(&format!(r#"[{{"version":3}},{{"token":"{long}"}}]"#)),
            PageError::TooLarge { limit: MAX_ID_LEN }
        );
        assert_eq!(
            err(&wrap(&format!(r#"{{"insert":{{"1":{{"{long}":"v"}}}}}}"#))),
            PageError::TooLarge { limit: MAX_NAME_LEN }
        );
        assert_eq!(
            err(&wrap(&format!(r#"{{"source-error":{{"{long}":{{}}}}}}"#))),
            PageError::TooLarge { limit: MAX_NAME_LEN }
        );

        let nested = |depth: usize| wrap(&format!(r#"{{"future":{}{}}}"#, "[".repeat(depth), "]".repeat(depth)));
        assert!(parse_page(nested(MAX_UNKNOWN_DEPTH).as_bytes()).is_ok());
        assert_eq!(
            err(&nested(MAX_UNKNOWN_DEPTH + 1)),
            PageError::TooLarge {
                limit: MAX_UNKNOWN_DEPTH
            }
        );
        assert!(parse_page(nested(100_000).as_bytes()).is_err());
        let deep_page = format!("[{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_page(deep_page.as_bytes()).is_err());
        assert!(parse_search(deep_page.as_bytes()).is_err());
    }

    /// Parsing `bytes` succeeds only if `bytes` is complete, valid JSON.
    fn check_no_false_accept(bytes: &[u8]) -> Result<(), TestCaseError> {
        if parse_page(bytes).is_ok() || parse_search(bytes).is_ok() {
            prop_assert!(
                serde_json::from_slice::<Value>(bytes).is_ok(),
                "accepted invalid JSON {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        Ok(())
    }

    #[test]
    fn every_prefix_of_a_page_is_an_error() {
        for body in [PRODUCT_PAGE, RESULT_PAGE, SEARCH_PAGE] {
            for end in 0..body.len() {
                assert!(parse_page(&body.as_bytes()[..end]).is_err(), "prefix {end} of {body}");
                assert!(parse_search(&body.as_bytes()[..end]).is_err(), "prefix {end} of {body}");
            }
        }
    }

    // ---- property tests --------------------------------------------------------------------

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                6 => prop::char::range('a', 'z'),
                1 => Just('"'),
                1 => Just('\\'),
                1 => Just('/'),
                1 => Just('-'),
                1 => prop::char::range('\0', '\u{1f}'),
                2 => any::<char>(),
            ],
            0..10,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    #[derive(Debug, Clone)]
    enum V {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
        Null,
    }

    impl V {
        fn json(&self) -> Value {
            match self {
                V::S(s) => json!(s),
                V::I(i) => json!(i),
                V::U(u) => json!(u),
                V::F(f) => json!(f),
                V::B(b) => json!(b),
                V::Null => Value::Null,
            }
        }
        fn text(&self) -> Option<String> {
            match self {
                V::S(s) => Some(s.clone()),
                V::Null => None,
                other => Some(serde_json::to_string(&other.json()).expect("number")),
            }
        }
    }

    fn value() -> impl Strategy<Value = V> {
        prop_oneof![
            6 => text().prop_map(V::S),
            1 => any::<i64>().prop_map(V::I),
            1 => any::<u64>().prop_map(V::U),
            1 => any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(V::F),
            1 => any::<bool>().prop_map(V::B),
            1 => Just(V::Null),
        ]
    }

    type AttrsModel = BTreeMap<String, V>;
    type ObjectsModel = BTreeMap<String, AttrsModel>;
    /// id → (message, attributes, "-error" key first)
    type ErrorsModel = BTreeMap<String, (Option<String>, Option<AttrsModel>, bool)>;

    #[derive(Debug, Clone)]
    struct Model {
        token: String,
        token_int: Option<u64>,
        counts: (u64, u64, u64),
        source: Option<String>,
        refresh_time: Option<i64>,
        metadata: Option<String>,
        schema_changed: bool,
        inserts: ObjectsModel,
        deletes: ObjectsModel,
        rollback: ObjectsModel,
        links: BTreeMap<String, String>,
        errors: [ErrorsModel; 3],
        source_error: Option<(String, String)>,
        search_error: Option<(String, String)>,
        split: bool,
        shuffle: u64,
    }

    fn attrs_model() -> impl Strategy<Value = AttrsModel> {
        prop::collection::btree_map(text(), value(), 0..6)
    }

    fn objects_model() -> impl Strategy<Value = ObjectsModel> {
        prop::collection::btree_map(text(), attrs_model(), 0..5)
    }

    fn errors_model() -> impl Strategy<Value = ErrorsModel> {
        prop::collection::btree_map(
            text().prop_filter("not an -error key", |id| !id.ends_with("-error")),
            (prop::option::of(text()), prop::option::of(attrs_model()), any::<bool>()),
            0..4,
        )
    }

    fn kind_error() -> impl Strategy<Value = Option<(String, String)>> {
        prop::option::of((text(), text()))
    }

    fn model() -> impl Strategy<Value = Model> {
        (
            (
                text(),
                prop::option::of(any::<u64>()),
                any::<(u64, u64, u64)>(),
                prop::option::of(text()),
            ),
            (prop::option::of(any::<i64>()), prop::option::of(text()), any::<bool>()),
            (
                objects_model(),
                objects_model(),
                objects_model(),
                prop::collection::btree_map(text(), text(), 0..4),
            ),
            (
                [errors_model(), errors_model(), errors_model()],
                kind_error(),
                kind_error(),
            ),
            (any::<bool>(), any::<u64>()),
        )
            .prop_map(
                |(
                    (token, token_int, counts, source),
                    (refresh_time, metadata, schema_changed),
                    (inserts, deletes, rollback, links),
                    (errors, source_error, search_error),
                    (split, shuffle),
                )| Model {
                    token,
                    token_int,
                    counts,
                    source,
                    refresh_time,
                    metadata,
                    schema_changed,
                    inserts,
                    deletes,
                    rollback,
                    links,
                    errors,
                    source_error,
                    search_error,
                    split,
                    shuffle,
                },
            )
    }

    fn attrs_json(attrs: &AttrsModel) -> Value {
        Value::Object(attrs.iter().map(|(k, v)| (k.clone(), v.json())).collect())
    }

    fn objects_json(objects: &ObjectsModel) -> Value {
        Value::Object(objects.iter().map(|(id, a)| (id.clone(), attrs_json(a))).collect())
    }

    fn errors_json(errors: &ErrorsModel) -> Value {
        let mut map = serde_json::Map::new();
        for (id, (message, attrs, error_first)) in errors {
            let error = message
                .as_ref()
                .map(|m| (format!("{id}-error"), json!({ "message": m })));
            let attrs = match (message, attrs) {
                (None, None) => Some((id.clone(), json!({}))),
                (_, a) => a.as_ref().map(|a| (id.clone(), attrs_json(a))),
            };
            let pair = if *error_first { [error, attrs] } else { [attrs, error] };
            for (k, v) in pair.into_iter().flatten() {
                map.insert(k, v);
            }
        }
        Value::Object(map)
    }

    fn encode(m: &Model) -> String {
        let mut elements = vec![json!({"version": 3})];
        elements.push(match m.token_int {
            Some(n) => json!({ "token": n }),
            None => json!({ "token": m.token }),
        });
        elements.push(json!({"count": m.counts.0}));
        elements.push(json!({"progress_count": m.counts.1}));
        elements.push(json!({"total_count": m.counts.2}));
        if let Some(s) = &m.source {
            elements.push(json!({ "source": s }));
        }
        if let Some(t) = m.refresh_time {
            elements.push(json!({ "refresh_time": t }));
        }
        let mut commands: Vec<(&str, Value)> = Vec::new();
        if let Some(md) = &m.metadata {
            commands.push(("metadata", json!(md)));
        }
        if m.schema_changed {
            commands.push(("schema-changed", json!("true")));
        }
        commands.push(("insert", objects_json(&m.inserts)));
        commands.push(("delete", objects_json(&m.deletes)));
        commands.push(("update-rollback", objects_json(&m.rollback)));
        let links = m.links.iter().map(|(t, id)| (t.clone(), json!({ "l": id })));
        commands.push(("links", Value::Object(links.collect())));
        for (name, errors) in ["create-error", "update-error", "delete-error"]
            .into_iter()
            .zip(&m.errors)
        {
            commands.push((name, errors_json(errors)));
        }
        for (name, error) in [("source-error", &m.source_error), ("search-error", &m.search_error)] {
            if let Some((kind, message)) = error {
                let mut map = serde_json::Map::new();
                map.insert(kind.clone(), json!({ "message": message }));
                commands.push((name, Value::Object(map)));
            }
        }
        if m.split {
            elements.extend(commands.into_iter().map(|(k, v)| json!({ k: v })));
        } else {
            elements.push(Value::Object(
                commands.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ));
        }
        // Fisher-Yates with a xorshift generator.
        let mut state = m.shuffle | 1;
        for i in (1..elements.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            elements.swap(i, (state % (i as u64 + 1)) as usize);
        }
        serde_json::to_string(&Value::Array(elements)).expect("encode")
    }

    fn expected_attrs(attrs: &AttrsModel) -> Vec<(Cow<'static, str>, Cow<'static, str>)> {
        attrs
            .iter()
            .filter_map(|(k, v)| Some((Cow::Owned(k.clone()), Cow::Owned(v.text()?))))
            .collect()
    }

    fn expected_objects(objects: &ObjectsModel) -> Vec<ObjectAttrs<'static>> {
        objects
            .iter()
            .map(|(id, a)| ObjectAttrs {
                id: Cow::Owned(id.clone()),
                attrs: expected_attrs(a),
            })
            .collect()
    }

    fn expected_errors(errors: &ErrorsModel) -> Vec<ObjectError<'static>> {
        errors
            .iter()
            .map(|(id, (message, attrs, _))| ObjectError {
                id: Cow::Owned(id.clone()),
                message: Cow::Owned(message.clone().unwrap_or_default()),
                attrs: attrs.as_ref().map(expected_attrs).unwrap_or_default(),
            })
            .collect()
    }

    fn expected(m: &Model) -> Page<'static> {
        let kind = |e: &Option<(String, String)>| {
            e.as_ref().map(|(k, msg)| KindError {
                kind: Cow::Owned(k.clone()),
                message: Cow::Owned(msg.clone()),
            })
        };
        Page {
            token: Cow::Owned(m.token_int.map_or_else(|| m.token.clone(), |n| n.to_string())),
            count: m.counts.0,
            progress_count: m.counts.1,
            total_count: m.counts.2,
            source: m.source.clone().map(Cow::Owned),
            refresh_time: m.refresh_time,
            inserts: expected_objects(&m.inserts),
            deletes: expected_objects(&m.deletes),
            links: m
                .links
                .iter()
                .map(|(t, id)| Link {
                    temp_id: Cow::Owned(t.clone()),
                    id: Cow::Owned(id.clone()),
                })
                .collect(),
            metadata: m.metadata.clone().map(Cow::Owned),
            schema_changed: m.schema_changed,
            create_errors: expected_errors(&m.errors[0]),
            update_errors: expected_errors(&m.errors[1]),
            delete_errors: expected_errors(&m.errors[2]),
            update_rollback: expected_objects(&m.rollback),
            source_error: kind(&m.source_error),
            search_error: kind(&m.search_error),
        }
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Set(usize, u8),
        Insert(usize, u8),
        Remove(usize),
        Truncate(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let special = prop_oneof![
            Just(b'"'),
            Just(b'\\'),
            Just(b'{'),
            Just(b'}'),
            Just(b'['),
            Just(b']'),
            Just(b','),
            Just(b':'),
            Just(b'-'),
            Just(b'0'),
            Just(b'9'),
            Just(b'e'),
            Just(b'.'),
            Just(b' '),
            any::<u8>()
        ];
        prop_oneof![
            (any::<usize>(), special.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (any::<usize>(), special).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Remove),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
        for m in mutations {
            let len = bytes.len();
            match *m {
                Mutation::Set(i, b) if len > 0 => bytes[i % len] = b,
                Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
                Mutation::Remove(i) if len > 0 => {
                    bytes.remove(i % len);
                }
                Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
                _ => {}
            }
        }
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let _ = parse_page(&bytes);
            let _ = parse_search(&bytes);
            check_no_false_accept(&bytes)?;
        }

        #[test]
        fn json_like_bytes_never_panic(chars in prop::collection::vec(
            prop::sample::select(b"[]{}\",:0123456789-+.eE \\ntrufalsversiotkcdh".to_vec()), 0..512)) {
            let _ = parse_page(&chars);
            let _ = parse_search(&chars);
            check_no_false_accept(&chars)?;
        }

        #[test]
        fn mutated_pages_never_panic(
            base in prop::sample::select(vec![PRODUCT_PAGE, RESULT_PAGE, SEARCH_PAGE]),
            mutations in prop::collection::vec(mutation(), 1..6),
        ) {
            let bytes = mutate(base.as_bytes().to_vec(), &mutations);
            let _ = parse_page(&bytes);
            let _ = parse_search(&bytes);
            check_no_false_accept(&bytes)?;
        }

        #[test]
        fn mutated_generated_pages_never_panic(m in model(), mutations in prop::collection::vec(mutation(), 1..4)) {
            let bytes = mutate(encode(&m).into_bytes(), &mutations);
            let _ = parse_page(&bytes);
            check_no_false_accept(&bytes)?;
        }

        #[test]
        fn generated_pages_round_trip(m in model()) {
            let body = encode(&m);
            let parsed = parse_page(body.as_bytes());
            prop_assert_eq!(parsed, Ok(expected(&m)), "{}", body);
            let search = format!("[[],[{}]]", &body[1..body.len() - 1]);
            prop_assert_eq!(parse_search(search.as_bytes()), Ok(vec![expected(&m)]));
        }
    }

    /// `cargo test --release -p tidesync-core -- --ignored --nocapture page_parse_speed`
    #[test]
    #[ignore = "benchmark: run in release with --ignored --nocapture"]
    fn page_parse_speed() {
        const OBJECTS: usize = 2000;
        const ROUNDS: usize = 500;
        let mut insert = serde_json::Map::new();
        for n in 0..OBJECTS {
            let mut obj = serde_json::Map::new();
            obj.insert("name".into(), json!(format!("Product {n}")));
            obj.insert(
                "brand".into(),
                json!(["Apple", "Samsung", "Motorola", "Nokia", "LG"][n % 5]),
            );
            obj.insert("price".into(), json!(format!("{}.{:02}", 10 + n, n % 100)));
            obj.insert("quantity".into(), json!(format!("{}", n * 7 % 50)));
            obj.insert("sku".into(), json!(format!("SKU-{n:05}")));
            obj.insert("color".into(), json!("midnight blue"));
            obj.insert("weight".into(), json!(format!("{}.5", n % 40)));
            obj.insert("category".into(), json!("electronics/phones"));
            obj.insert(
                "description".into(),
                json!(format!("A fine product number {n}, \"quoted\"")),
            );
            obj.insert("updated_at".into(), json!("2026-11-24T10:00:00Z"));
            insert.insert((n + 1).to_string(), Value::Object(obj));
        }
        let body = serde_json::to_string(&json!([
            {"version": 3}, {"token": "564744267555226"}, {"count": OBJECTS}, {"progress_count": 0},
            {"total_count": OBJECTS}, {"insert": insert}
        ]))
        .expect("encode");
        let start = std::time::Instant::now();
        let mut objects = 0;
        for _ in 0..ROUNDS {
            let page = parse_page(std::hint::black_box(body.as_bytes())).expect("page");
            objects += page.inserts.len();
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(objects, OBJECTS * ROUNDS);
        // Baseline: serde_json validating the same body without building anything.
        let start = std::time::Instant::now();
        for _ in 0..ROUNDS {
            serde_json::from_slice::<IgnoredAny>(std::hint::black_box(body.as_bytes())).expect("valid");
        }
        let baseline = start.elapsed().as_secs_f64();
        println!(
            "page_parse_speed: {OBJECTS} objects x 10 attributes, {} bytes, {ROUNDS} rounds: {:.0} objects/s, {:.0} MB/s \
             (serde_json IgnoredAny on the same body: {:.0} objects/s)",
            body.len(),
            objects as f64 / secs,
            (body.len() * ROUNDS) as f64 / secs / 1e6,
            objects as f64 / baseline,
        );
    }
}

//! Conditions, ordering and paging for local finds (what Rhom's `find` offered).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::check_name;

/// A condition on an attribute (`id` names the object id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    /// `attr = value`
    Eq(String, String),
    /// `attr != value` (objects without the attribute do not match)
    Ne(String, String),
    /// `attr < value` (text comparison)
    Lt(String, String),
    /// `attr > value`
    Gt(String, String),
    /// `attr <= value`
    Le(String, String),
    /// `attr >= value`
    Ge(String, String),
    /// SQL `LIKE` pattern (`%`, `_`), case-insensitive for ASCII
    Like(String, String),
    /// `attr` is one of the values
    In(String, Vec<String>),
    /// the attribute is absent
    IsNull(String),
    /// the attribute is present
    NotNull(String),
    /// all of
    And(Vec<Cond>),
    /// any of
    Or(Vec<Cond>),
}

/// A find: conditions, order, paging, selected attributes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Query {
    /// Filter; `None` matches every object.
    pub cond: Option<Cond>,
    /// Order by attributes (`true` = descending); ties by id.
    pub order: Vec<(String, bool)>,
    /// At most this many objects.
    pub limit: Option<u64>,
    /// Skip this many first.
    pub offset: Option<u64>,
    /// Only these attributes in the results (`None`: all).
    pub select: Option<Vec<String>>,
}

impl Query {
    /// Every object.
    pub fn all() -> Self {
        Self::default()
    }

    /// Objects matching `cond`.
    pub fn filter(cond: Cond) -> Self {
        Self {
            cond: Some(cond),
            ..Self::default()
        }
    }

    /// Adds an ordering.
    pub fn order_by(mut self, attr: &str, descending: bool) -> Self {
        self.order.push((attr.to_owned(), descending));
        self
    }

    /// Sets limit and offset.
    pub fn page(mut self, limit: u64, offset: u64) -> Self {
        self.limit = Some(limit);
        self.offset = Some(offset);
        self
    }
}

/// How to read an attribute in SQL for one storage kind.
pub(crate) trait AttrExpr {
    /// SQL for attribute `name`; may push parameters.
    fn attr(&self, name: &str, params: &mut Vec<String>) -> Result<String>;
}

/// Property bags: `json_extract(attrs, '$."name"')`.
pub(crate) struct BagExpr;

impl AttrExpr for BagExpr {
    fn attr(&self, name: &str, params: &mut Vec<String>) -> Result<String> {
        check_name("attribute", name)?;
        if name == "id" {
            return Ok("id".into());
        }
        params.push(json_path(name));
        Ok(format!("json_extract(attrs, ?{})", params.len()))
    }
}

/// Fixed schema: the column, which must be declared.
pub(crate) struct ColumnExpr<'a>(pub &'a [String]);

impl AttrExpr for ColumnExpr<'_> {
    fn attr(&self, name: &str, _params: &mut Vec<String>) -> Result<String> {
        if name == "id" {
            return Ok("id".into());
        }
        if !self.0.iter().any(|c| c == name) {
            return Err(Error::invalid(format!(
                "`{name}` is not a column of this fixed-schema source"
            )));
        }
        Ok(crate::store::meta::ident(name))
    }
}

/// The JSON path of a top-level key.
pub(crate) fn json_path(name: &str) -> String {
    format!("$.\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// SQL for `cond` (parameters appended to `params`).
pub(crate) fn where_sql(cond: &Cond, x: &dyn AttrExpr, params: &mut Vec<String>) -> Result<String> {
    let bin = |a: &str, op: &str, v: &str, params: &mut Vec<String>| -> Result<String> {
        let e = x.attr(a, params)?;
        params.push(v.to_owned());
        Ok(format!("({e} {op} ?{})", params.len()))
    };
    Ok(match cond {
        Cond::Eq(a, v) => bin(a, "=", v, params)?,
        Cond::Ne(a, v) => bin(a, "!=", v, params)?,
        Cond::Lt(a, v) => bin(a, "<", v, params)?,
        Cond::Gt(a, v) => bin(a, ">", v, params)?,
        Cond::Le(a, v) => bin(a, "<=", v, params)?,
        Cond::Ge(a, v) => bin(a, ">=", v, params)?,
        Cond::Like(a, v) => bin(a, "LIKE", v, params)?,
        Cond::In(a, vs) => {
            let e = x.attr(a, params)?;
            params.push(serde_json::to_string(vs).map_err(|e| Error::invalid(e.to_string()))?);
            format!("({e} IN (SELECT value FROM json_each(?{})))", params.len())
        }
        Cond::IsNull(a) => format!("({} IS NULL)", x.attr(a, params)?),
        Cond::NotNull(a) => format!("({} IS NOT NULL)", x.attr(a, params)?),
        Cond::And(cs) | Cond::Or(cs) if cs.is_empty() => {
            if matches!(cond, Cond::And(_)) {
                "1".into()
            } else {
                "0".into()
            }
        }
        Cond::And(cs) => {
            let parts = cs.iter().map(|c| where_sql(c, x, params)).collect::<Result<Vec<_>>>()?;
            format!("({})", parts.join(" AND "))
        }
        Cond::Or(cs) => {
            let parts = cs.iter().map(|c| where_sql(c, x, params)).collect::<Result<Vec<_>>>()?;
            format!("({})", parts.join(" OR "))
        }
    })
}

/// `ORDER BY … LIMIT … OFFSET …` for `q`.
pub(crate) fn tail_sql(q: &Query, x: &dyn AttrExpr, params: &mut Vec<String>) -> Result<String> {
    let mut s = String::from(" ORDER BY ");
    for (a, desc) in &q.order {
        s.push_str(&x.attr(a, params)?);
        s.push_str(if *desc { " DESC, " } else { " ASC, " });
    }
    s.push_str("id");
    if q.limit.is_some() || q.offset.is_some() {
        s.push_str(&format!(
            " LIMIT {} OFFSET {}",
            q.limit.map(|l| l as i64).unwrap_or(-1),
            q.offset.unwrap_or(0)
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attrs, SourceDef};
    use crate::sync::{SyncClient, SyncConfig};
    use proptest::prelude::*;

    const NAMES: [&str; 4] = ["a", "b", "c.d", "e\"f"];
    const VALUES: [&str; 12] = ["", "a", "A", "ab", "aB%", "b_", "é", "É", "10", "9", "a\"b", "x\\y"];

    fn value() -> impl Strategy<Value = String> {
        prop::sample::select(VALUES.to_vec()).prop_map(str::to_owned)
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![4 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned), 1 => Just("id".to_owned())]
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec!['a', 'A', 'b', '%', '_', 'é', '9']), 0..4)
            .prop_map(|c| c.into_iter().collect())
    }

    fn cond() -> impl Strategy<Value = Cond> {
        let leaf = prop_oneof![
            (name(), value()).prop_map(|(a, v)| Cond::Eq(a, v)),
            (name(), value()).prop_map(|(a, v)| Cond::Ne(a, v)),
            (name(), value()).prop_map(|(a, v)| Cond::Lt(a, v)),
            (name(), value()).prop_map(|(a, v)| Cond::Gt(a, v)),
            (name(), value()).prop_map(|(a, v)| Cond::Le(a, v)),
            (name(), value()).prop_map(|(a, v)| Cond::Ge(a, v)),
            (name(), pattern()).prop_map(|(a, v)| Cond::Like(a, v)),
            (name(), prop::collection::vec(value(), 0..3)).prop_map(|(a, v)| Cond::In(a, v)),
            name().prop_map(Cond::IsNull),
            name().prop_map(Cond::NotNull),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Cond::And),
                prop::collection::vec(inner, 0..3).prop_map(Cond::Or),
            ]
        })
    }

    /// SQLite's `LIKE` without ESCAPE: `%` any run, `_` one character, ASCII case-insensitive.
    fn like(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('%', rest)) => (0..=s.len()).any(|i| like(rest, &s[i..])),
            Some((c, rest)) => match s.split_first() {
                Some((d, s_rest)) => (*c == '_' || c.eq_ignore_ascii_case(d)) && like(rest, s_rest),
                None => false,
            },
        }
    }

    /// What `cond` means, evaluated in memory.
    fn matches(c: &Cond, id: &str, attrs: &Attrs) -> bool {
        let get = |a: &str| {
            if a == "id" {
                Some(id)
            } else {
                attrs.get(a).map(String::as_str)
            }
        };
        let cmp = |a: &str, f: &dyn Fn(&str) -> bool| get(a).is_some_and(f);
        match c {
            Cond::Eq(a, v) => cmp(a, &|x| x == v),
            Cond::Ne(a, v) => cmp(a, &|x| x != v),
            Cond::Lt(a, v) => cmp(a, &|x| x < v.as_str()),
            Cond::Gt(a, v) => cmp(a, &|x| x > v.as_str()),
            Cond::Le(a, v) => cmp(a, &|x| x <= v.as_str()),
            Cond::Ge(a, v) => cmp(a, &|x| x >= v.as_str()),
            Cond::Like(a, p) => cmp(a, &|x| {
                like(&p.chars().collect::<Vec<_>>(), &x.chars().collect::<Vec<_>>())
            }),
            Cond::In(a, vs) => cmp(a, &|x| vs.iter().any(|v| v == x)),
            Cond::IsNull(a) => get(a).is_none(),
            Cond::NotNull(a) => get(a).is_some(),
            Cond::And(cs) => cs.iter().all(|c| matches(c, id, attrs)),
            Cond::Or(cs) => cs.iter().any(|c| matches(c, id, attrs)),
        }
    }

    #[test]
    fn like_model_matches_sqlite_examples() {
        let l = |p: &str, s: &str| like(&p.chars().collect::<Vec<_>>(), &s.chars().collect::<Vec<_>>());
        assert!(l("a%", "AB"));
        assert!(l("_", "é"));
        assert!(!l("é", "É"));
        assert!(!l("a", ""));
        assert!(l("%", ""));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// A condition's SQL (names quoted into JSON paths, values as parameters) selects exactly
        /// the objects the condition describes, for names and values with quotes, dots,
        /// backslashes, `%`, `_` and non-ASCII letters; `count` agrees with `find_all`.
        #[test]
        fn find_selects_what_the_condition_means(
            objects in prop::collection::vec(prop::collection::btree_map(prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned), value(), 0..4), 0..8),
            conds in prop::collection::vec(cond(), 1..6),
        ) {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            let client = SyncClient::open(&dir.path().join("q.db"), SyncConfig::new("http://127.0.0.1:1/application/"))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            client.define_source(&SourceDef::new("T")).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut created = Vec::new();
            for attrs in &objects {
                let o = client.create("T", attrs.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                created.push(o);
            }
            for c in &conds {
                let mut want: Vec<&str> = created.iter().filter(|o| matches(c, &o.id, &o.attrs)).map(|o| o.id.as_str()).collect();
                want.sort_unstable();
                let found = client.find_all("T", &Query::filter(c.clone())).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut got: Vec<&str> = found.iter().map(|o| o.id.as_str()).collect();
                got.sort_unstable();
                prop_assert_eq!(&got, &want, "{:?}", c);
                let n = client.count("T", Some(c)).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(n as usize, want.len());
            }
        }
    }
}

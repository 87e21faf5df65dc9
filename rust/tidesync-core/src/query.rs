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

//! Objects as the protocol sees them: an id and string attributes.
//!
//! RhoConnect is a property-bag protocol: every value on the wire is a string and an object is
//! whatever attributes the backend gives it. [`Obj`] keeps the attributes in the order the backend
//! produced them, so pages list them the way a RhoConnect adapter would. Objects are immutable once
//! stored and shared through [`ObjRef`], so the master document and every client document can
//! point at the same allocation.

use std::sync::Arc;

/// A shared, immutable object.
pub type ObjRef = Arc<Obj>;

/// Attributes of one object, in backend order, each name at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Obj(Vec<(String, String)>);

impl Obj {
    /// An object without attributes.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Builds an object from pairs; a later pair with the same name replaces the earlier value.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        let mut obj = Self::new();
        for (k, v) in pairs {
            obj.set(k.into(), v.into());
        }
        obj
    }

    /// The value of attribute `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Sets attribute `name` to `value`, keeping its position if it exists.
    pub fn set(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// Removes attribute `name`; returns its old value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let pos = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(pos).1)
    }

    /// The attributes in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the object has no attribute.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A copy with `changes` applied on top (an update as adapters apply it).
    pub fn merged(&self, changes: &Obj) -> Obj {
        let mut out = self.clone();
        for (k, v) in changes.iter() {
            out.set(k.to_owned(), v.to_owned());
        }
        out
    }

    /// Attributes of `self` whose value differs from (or is absent in) `other`.
    pub fn minus(&self, other: Option<&Obj>) -> Obj {
        match other {
            None => self.clone(),
            Some(o) => Obj(self
                .0
                .iter()
                .filter(|(k, v)| o.get(k) != Some(v.as_str()))
                .cloned()
                .collect()),
        }
    }

    /// Serializes as a JSON object into `out` (compact, as the RhoConnect server writes it).
    pub fn write_json(&self, out: &mut String) {
        out.push('{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::json::write_str(out, k);
            out.push(':');
            crate::json::write_str(out, v);
        }
        out.push('}');
    }

    /// Parses a JSON object whose values are strings (numbers and booleans are taken as their
    /// text, `null` as an absent attribute, as the Ruby server would coerce them).
    pub fn from_json(value: &serde_json::Value) -> Option<Obj> {
        let map = value.as_object()?;
        let mut obj = Obj::new();
        for (k, v) in map {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Null => continue,
                _ => return None,
            };
            obj.set(k.clone(), s);
        }
        Some(obj)
    }

    /// Converts into a JSON value (for tests and tools).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_lists_changed_and_new_attributes_only() {
        let old = Obj::from_pairs([("a", "1"), ("b", "2")]);
        let new = Obj::from_pairs([("a", "1"), ("b", "3"), ("c", "4")]);
        assert_eq!(new.minus(Some(&old)), Obj::from_pairs([("b", "3"), ("c", "4")]));
        assert_eq!(old.minus(Some(&new)), Obj::from_pairs([("b", "2")]));
        assert_eq!(old.minus(None), old);
    }

    #[test]
    fn json_escapes_quotes_and_control_characters() {
        let o = Obj::from_pairs([("n\"", "a\\b\n\u{1}")]);
        let mut s = String::new();
        o.write_json(&mut s);
        let back: serde_json::Value = serde_json::from_str(&s).expect("valid json");
        assert_eq!(Obj::from_json(&back), Some(o));
    }
}

//! Deterministic in-memory backends: the transcripts' test application and generated data sets.
//!
//! The data is computed from the object number (and a seed), never stored by the adapter: the
//! server's master document holds it once loaded, so a 1M-object data set costs one copy.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::adapter::{AdapterError, SourceAdapter};
use crate::obj::Obj;

/// What the generated objects look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// The transcripts' Product: name, brand, price, quantity, sku.
    Product,
    /// The transcripts' Customer: first, last, city, phone.
    Customer,
    /// `attrs` attributes `attr0`…, each a 12-character pseudo-random string from the seed.
    Generic {
        /// Number of attributes per object.
        attrs: usize,
    },
}

/// Refusal rules, as the transcripts' test application has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Creates whose `name` equals this are refused.
    pub create_name: Option<String>,
    /// Updates that set `name` to this are refused.
    pub update_name: Option<String>,
    /// These ids cannot be deleted.
    pub delete_ids: Vec<String>,
}

impl Refusals {
    /// The transcripts' rules: create `name == "error"`, update `name == "conflict"`, delete `13`.
    pub fn transcripts() -> Self {
        Self {
            create_name: Some("error".into()),
            update_name: Some("conflict".into()),
            delete_ids: vec!["13".into()],
        }
    }

    /// The rules without the fixed delete refusal, for generated data sets.
    pub fn names_only() -> Self {
        Self {
            delete_ids: Vec::new(),
            ..Self::transcripts()
        }
    }
}

const BRANDS: [&str; 8] = ["Apple", "Samsung", "Motorola", "Nokia", "LG", "Sony", "HTC", "Google"];
const FIRST: [&str; 10] = [
    "John", "Mary", "James", "Linda", "Paul", "Susan", "Mark", "Karen", "David", "Nancy",
];
const LAST: [&str; 10] = [
    "Smith", "Thomas", "Brown", "Jones", "Wilson", "Taylor", "Evans", "Clark", "Lewis", "Walker",
];
const CITY: [&str; 10] = [
    "Seattle", "Austin", "Chicago", "Miami", "Boston", "Portland", "Denver", "Atlanta", "Phoenix", "Dallas",
];

/// A generated source: objects `"1"..="count"`.
#[derive(Debug)]
pub struct GeneratedAdapter {
    source: String,
    shape: Shape,
    count: u64,
    seed: u64,
    next_id: AtomicU64,
    refusals: Refusals,
}

impl GeneratedAdapter {
    /// A source named `source` with `count` objects of `shape`.
    pub fn new(source: &str, shape: Shape, count: u64, seed: u64, refusals: Refusals) -> Self {
        Self {
            source: source.to_owned(),
            shape,
            count,
            seed,
            next_id: AtomicU64::new(count.max(1000) + 1),
            refusals,
        }
    }

    /// Object number `n` (1-based) as the data set defines it.
    pub fn object(&self, n: u64) -> Obj {
        generate(&self.shape, n, self.seed)
    }
}

/// Object number `n` of `shape` under `seed`.
pub fn generate(shape: &Shape, n: u64, seed: u64) -> Obj {
    match shape {
        Shape::Product => Obj::from_pairs([
            ("name", format!("Product {n}")),
            ("brand", BRANDS[(n % 8) as usize].to_owned()),
            ("price", format!("{}.{:02}", 10 + n, n % 100)),
            ("quantity", ((n * 7) % 50).to_string()),
            ("sku", format!("SKU-{n:05}")),
        ]),
        Shape::Customer => Obj::from_pairs([
            ("first", FIRST[(n % 10) as usize].to_owned()),
            ("last", LAST[(n % 10) as usize].to_owned()),
            ("city", CITY[(n % 10) as usize].to_owned()),
            ("phone", format!("555-{n:04}")),
        ]),
        Shape::Generic { attrs } => {
            let mut obj = Obj::new();
            for j in 0..*attrs {
                let mut h = splitmix(seed ^ splitmix(n.wrapping_mul(0x9E37_79B9).wrapping_add(j as u64)));
                let mut v = String::with_capacity(12);
                for _ in 0..12 {
                    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
                    v.push(ALPHABET[(h % ALPHABET.len() as u64) as usize] as char);
                    h /= ALPHABET.len() as u64;
                    if h == 0 {
                        h = splitmix(n ^ j as u64 ^ seed);
                    }
                }
                obj.set(format!("attr{j}"), v);
            }
            obj
        }
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

impl SourceAdapter for GeneratedAdapter {
    fn query(&self, _user: &str) -> Result<Vec<(String, Obj)>, AdapterError> {
        Ok((1..=self.count).map(|n| (n.to_string(), self.object(n))).collect())
    }

    fn create(&self, _user: &str, obj: &Obj) -> Result<Option<String>, AdapterError> {
        if let (Some(bad), Some(name)) = (&self.refusals.create_name, obj.get("name"))
            && bad == name
        {
            return Err(AdapterError(format!("{} name '{name}' is not allowed", self.source)));
        }
        Ok(Some(self.next_id.fetch_add(1, Ordering::SeqCst).to_string()))
    }

    fn update(&self, _user: &str, _id: &str, _current: &Obj, changes: &Obj) -> Result<(), AdapterError> {
        if let (Some(bad), Some(name)) = (&self.refusals.update_name, changes.get("name"))
            && bad == name
        {
            return Err(AdapterError(format!("Update conflict: name '{name}' rejected")));
        }
        Ok(())
    }

    fn delete(&self, _user: &str, id: &str, _current: &Obj) -> Result<(), AdapterError> {
        if self.refusals.delete_ids.iter().any(|d| d == id) {
            return Err(AdapterError(format!("{} {id} cannot be deleted", self.source)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn product_and_customer_match_the_recorded_values() {
        let p = generate(&Shape::Product, 192, 0);
        assert_eq!(p.get("brand"), Some("Apple"));
        assert_eq!(p.get("price"), Some("202.92"));
        assert_eq!(p.get("quantity"), Some("44"));
        assert_eq!(p.get("sku"), Some("SKU-00192"));
        let c = generate(&Shape::Customer, 86, 0);
        assert_eq!(
            c,
            Obj::from_pairs([
                ("first", "Mark"),
                ("last", "Evans"),
                ("city", "Denver"),
                ("phone", "555-0086")
            ])
        );
        let c = generate(&Shape::Customer, 31, 0);
        assert_eq!(c.get("first"), Some("Mary"));
        assert_eq!(c.get("city"), Some("Austin"));
    }

    #[test]
    fn generic_objects_are_deterministic_and_seeded() {
        let s = Shape::Generic { attrs: 10 };
        assert_eq!(generate(&s, 5, 1), generate(&s, 5, 1));
        assert_ne!(generate(&s, 5, 1), generate(&s, 5, 2));
        assert_eq!(generate(&s, 5, 1).len(), 10);
    }

    #[test]
    fn transcript_refusals_use_the_recorded_messages() {
        let a = GeneratedAdapter::new("Product", Shape::Product, 300, 0, Refusals::transcripts());
        let err = a
            .create("alice", &Obj::from_pairs([("name", "error")]))
            .expect_err("refused");
        assert_eq!(err.0, "Product name 'error' is not allowed");
        assert_eq!(
            a.create("alice", &Obj::from_pairs([("name", "ok")])),
            Ok(Some("1001".into()))
        );
        let err = a
            .update("alice", "20", &Obj::new(), &Obj::from_pairs([("name", "conflict")]))
            .expect_err("refused");
        assert_eq!(err.0, "Update conflict: name 'conflict' rejected");
        assert_eq!(
            a.delete("alice", "13", &Obj::new()).expect_err("refused").0,
            "Product 13 cannot be deleted"
        );
    }
}

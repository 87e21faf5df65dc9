//! The application a server serves: its sources, their partitions and adapters, and login.

use std::sync::Arc;
use std::time::Duration;

use crate::adapter::{Authenticator, FixedPassword, SourceAdapter};
use crate::dataset::{GeneratedAdapter, Refusals, Shape};

/// Who shares a source's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// One data set per user (RhoConnect's default).
    User,
    /// One data set shared by all users (`partition_type: app`).
    App,
}

impl Partition {
    /// `"user"` or `"app"`, as in bulk files and settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Partition::User => "user",
            Partition::App => "app",
        }
    }
}

/// One source of the application.
#[derive(Clone)]
pub struct SourceDef {
    /// Source (model) name, e.g. `Product`.
    pub name: String,
    /// Whose data it is.
    pub partition: Partition,
    /// Sync priority reported in bulk files (lower first).
    pub priority: i64,
    /// The backend.
    pub adapter: Arc<dyn SourceAdapter>,
    /// Re-query the adapter when the master document is older than this. `None`: query once and
    /// keep the master document up to date from pushes and the [`crate::Backend`] API.
    pub refresh: Option<Duration>,
}

impl std::fmt::Debug for SourceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceDef")
            .field("name", &self.name)
            .field("partition", &self.partition)
            .field("priority", &self.priority)
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

/// A RhoConnect application: its name (the path word, `application`), sources and login check.
#[derive(Clone)]
pub struct App {
    /// Application name; also the first path word of bulk file URLs.
    pub name: String,
    /// The sources, in declaration order.
    pub sources: Vec<SourceDef>,
    /// Login check.
    pub auth: Arc<dyn Authenticator>,
    /// How long a finished bulk data file is reused (`bulk_sync_poll_interval`).
    pub bulk_sync_poll_interval: Duration,
    /// Delay before a bulk job starts, so that clients see `{"result":"wait"}` as against a real
    /// server with a job queue.
    pub bulk_job_delay: Duration,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl App {
    /// The test application the transcripts were recorded with: `Product` (app partition, 300
    /// objects, refusal rules) and `Customer` (user partition, 120 objects per user); any login
    /// with password `password`.
    pub fn transcripts() -> Self {
        let product = GeneratedAdapter::new("Product", Shape::Product, 300, 0, Refusals::transcripts());
        let customer = GeneratedAdapter::new("Customer", Shape::Customer, 120, 0, Refusals::transcripts());
        Self {
            name: "application".into(),
            sources: vec![
                SourceDef {
                    name: "Product".into(),
                    partition: Partition::App,
                    priority: 1,
                    adapter: Arc::new(product),
                    refresh: None,
                },
                SourceDef {
                    name: "Customer".into(),
                    partition: Partition::User,
                    priority: 2,
                    adapter: Arc::new(customer),
                    refresh: None,
                },
            ],
            auth: Arc::new(FixedPassword("password".into())),
            bulk_sync_poll_interval: Duration::from_secs(3600),
            bulk_job_delay: Duration::from_millis(200),
        }
    }

    /// Generated sources from `(name, count, attrs)`: `Product` and `Customer` get the transcripts'
    /// shapes (and partitions: Product app, Customer user); other names get `attrs` generic
    /// attributes in the app partition. Password `password`, create/update refusal rules of the
    /// transcripts (names `error` / `conflict`).
    pub fn generated(specs: &[DatasetSpec], seed: u64) -> Self {
        let sources = specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let (shape, partition) = match (spec.name.as_str(), spec.attrs) {
                    ("Product", None) => (Shape::Product, Partition::App),
                    ("Customer", None) => (Shape::Customer, Partition::User),
                    (_, attrs) => (
                        Shape::Generic {
                            attrs: attrs.unwrap_or(10),
                        },
                        spec.partition.unwrap_or(Partition::App),
                    ),
                };
                let partition = spec.partition.unwrap_or(partition);
                let adapter = GeneratedAdapter::new(&spec.name, shape, spec.count, seed, Refusals::names_only());
                SourceDef {
                    name: spec.name.clone(),
                    partition,
                    priority: i as i64 + 1,
                    adapter: Arc::new(adapter),
                    refresh: None,
                }
            })
            .collect();
        Self {
            sources,
            ..Self::transcripts()
        }
    }

    /// The source named `name`, if declared.
    pub fn source(&self, name: &str) -> Option<&SourceDef> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// One generated source: `Name=COUNT` or `Name=COUNTxATTRS` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Source name.
    pub name: String,
    /// Number of objects.
    pub count: u64,
    /// Number of generic attributes; `None` uses the named shape (Product/Customer) or 10.
    pub attrs: Option<usize>,
    /// Partition override.
    pub partition: Option<Partition>,
}

impl DatasetSpec {
    /// Parses a comma-separated list such as `Product=300,Customer=120,Item=100000x10`.
    ///
    /// # Errors
    /// A message naming the part that does not parse.
    pub fn parse_list(s: &str) -> Result<Vec<DatasetSpec>, String> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| Self::parse(p.trim()))
            .collect()
    }

    fn parse(part: &str) -> Result<DatasetSpec, String> {
        let (name, rest) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}`: expected NAME=COUNT"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{part}`: source names are letters, digits and `_`"));
        }
        let (count, attrs) = match rest.split_once('x') {
            Some((c, a)) => (
                c,
                Some(a.parse::<usize>().map_err(|e| format!("`{part}`: attributes: {e}"))?),
            ),
            None => (rest, None),
        };
        let count = count.parse::<u64>().map_err(|e| format!("`{part}`: count: {e}"))?;
        Ok(DatasetSpec {
            name: name.to_owned(),
            count,
            attrs,
            partition: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_specs_parse() {
        let specs = DatasetSpec::parse_list("Product=300,Customer=120,Item=100000x10").expect("parses");
        assert_eq!(specs.len(), 3);
        assert_eq!(
            specs[2],
            DatasetSpec {
                name: "Item".into(),
                count: 100_000,
                attrs: Some(10),
                partition: None
            }
        );
        assert!(DatasetSpec::parse_list("Product").is_err());
        assert!(DatasetSpec::parse_list("Pro duct=1").is_err());
        assert!(DatasetSpec::parse_list("P=1xq").is_err());
    }
}

//! Search (spec §7): the adapter searches, the server sends only what the client lacks, pages
//! through the stored result under one token, and adds what it sends to the client document.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::json::write_str;
use crate::obj::Obj;
use crate::state::{ClientError, State};

/// A search in progress for one client and source.
#[derive(Debug, Clone)]
pub(crate) struct SearchState {
    pub token: String,
    pub remaining: VecDeque<(Arc<str>, Obj)>,
    pub last: Vec<(Arc<str>, Obj)>,
}

/// The answer to a search request.
#[derive(Debug)]
pub(crate) struct SearchOut {
    pub body: String,
    /// Token and count of the first source's page, for the headers.
    pub first: Option<(String, usize)>,
}

/// One searched source: name and the token it acknowledges.
#[derive(Debug, Clone)]
pub(crate) struct SearchSource {
    pub name: String,
    pub token: Option<String>,
}

impl State {
    /// Runs or continues a search for `client_id` over `sources` with `params`.
    pub fn search(
        &self,
        user: &str,
        client_id: Option<&str>,
        p_size: usize,
        params: &[(String, String)],
        sources: &[SearchSource],
        resend: bool,
    ) -> Result<SearchOut, ClientError> {
        let client = self.client(user, client_id)?;
        let mut out = String::from("[");
        let mut first = None;
        for (i, src) in sources.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let def = self.source_def(user, &src.name);
            let md = self.md(&def, user);
            let mut c = client.lock();
            let cs = c.sources.entry(src.name.clone()).or_default();
            let error = |out: &mut String, msg: &str| write_search_error(out, &src.name, msg);
            match &src.token {
                None => {
                    let md = md.read();
                    let found = {
                        let mut candidates = md.iter().map(|(k, o)| (&**k, &**o));
                        def.adapter.search(user, params, &mut candidates)
                    };
                    match found {
                        Err(e) => {
                            cs.search = None;
                            error(&mut out, &e.0);
                            continue;
                        }
                        Ok(ids) => {
                            let mut remaining = VecDeque::new();
                            for id in ids {
                                let Some(m) = md.get(&id).cloned() else { continue };
                                let key = md.key(&id).unwrap_or_else(|| Arc::from(id.as_str()));
                                let diff = m.minus(cs.cd.get(&key).map(|c| &**c));
                                if !diff.is_empty() {
                                    remaining.push_back((key.clone(), diff));
                                    cs.cd.insert(key, m);
                                }
                            }
                            // Search results join the master document too in RhoConnect
                            // (`_compute_search`); ours come from it already.
                            cs.search = Some(SearchState {
                                token: self.new_token(),
                                remaining,
                                last: Vec::new(),
                            });
                        }
                    }
                }
                Some(t) => match &cs.search {
                    Some(s) if s.token == *t => {
                        if resend {
                            let s = s.clone();
                            write_search_page(&mut out, &src.name, &s.token, &s.last);
                            if i == 0 {
                                first = Some((s.token.clone(), s.last.len()));
                            }
                            continue;
                        }
                    }
                    _ => {
                        cs.search = None;
                        error(&mut out, "Search error - invalid token");
                        continue;
                    }
                },
            }
            let Some(s) = cs.search.as_mut() else {
                out.push_str("[]");
                continue;
            };
            let n = p_size.min(s.remaining.len());
            let page: Vec<(Arc<str>, Obj)> = s.remaining.drain(..n).collect();
            if page.is_empty() {
                cs.search = None;
                out.push_str("[]");
                continue;
            }
            write_search_page(&mut out, &src.name, &s.token, &page);
            if i == 0 {
                first = Some((s.token.clone(), page.len()));
            }
            s.last = page;
        }
        out.push(']');
        Ok(SearchOut { body: out, first })
    }
}

/// One source's search error as RhoConnect writes it (`search-error`, kind `search-error`).
pub(crate) fn write_search_error(out: &mut String, source: &str, msg: &str) {
    out.push_str("[{\"version\":3},{\"source\":");
    write_str(out, source);
    out.push_str("},{\"search-error\":{\"search-error\":{\"message\":");
    write_str(out, msg);
    out.push_str("}}}]");
}

/// One source's page of search results.
pub(crate) fn write_search_page(out: &mut String, source: &str, token: &str, objects: &[(Arc<str>, Obj)]) {
    out.push_str("[{\"version\":3},{\"token\":");
    write_str(out, token);
    out.push_str("},{\"source\":");
    write_str(out, source);
    out.push_str(&format!("}},{{\"count\":{}}},{{\"insert\":{{", objects.len()));
    for (i, (id, obj)) in objects.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, id);
        out.push(':');
        obj.write_json(out);
    }
    out.push_str("}}]");
}

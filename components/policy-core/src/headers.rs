//! Reading headers the way HTTP means them (names compare case-insensitively),
//! and [`HeaderView`]: a message's headers, read on demand.

/// Header fields in order; names lower-case.
pub type Headers = Vec<(String, String)>;

/// Where a host keeps the headers of the message a call is about, so a
/// policy reads only the ones it asks for (the edgegate host's `message`
/// import). Valid during the head call (`on_request`, `on_response`) only.
pub trait HeaderSource: Sync {
    /// The first value of `name`.
    fn get(&self, name: &str) -> Option<String>;
    /// Every value of `name`, in order.
    fn values(&self, name: &str) -> Vec<String>;
    /// Every field, in order.
    fn entries(&self) -> Headers;
}

/// The headers of a request or response. A host hands them over as a lazy
/// view ([`HeaderView::host`]): nothing is copied for a policy that reads no
/// header, the first look-up asks the host for that one header, and a second
/// one copies them all once, so a policy that reads many (caching reads six
/// or more) pays for two host calls, not one per header. Tests, and policies
/// building a message, use an owned list (`From<Headers>`).
///
/// A host view reads the message the current head call is about: kept for a
/// later chunk or event call, it finds what it copied, or nothing. Take what
/// you need with [`HeaderView::get`] or [`HeaderView::to_vec`] during the
/// head call.
#[derive(Clone, Default)]
pub struct HeaderView {
    /// Set while the fields are the host's, read on demand; `list` is then empty.
    host: Option<&'static dyn HeaderSource>,
    list: Headers,
    /// A host view's fields, copied at its second look-up.
    fetched: std::cell::OnceCell<Headers>,
    /// Whether a host view answered one look-up already.
    asked: std::cell::Cell<bool>,
}

impl HeaderView {
    /// A view that reads from the host on demand.
    pub fn host(source: &'static dyn HeaderSource) -> Self {
        HeaderView {
            host: Some(source),
            ..HeaderView::default()
        }
    }

    /// The fields to look in: the owned list, or a host view's copy once it
    /// is worth making; `None` for a host view's first look-up.
    fn local(&self) -> Option<&Headers> {
        let Some(h) = self.host else {
            return Some(&self.list);
        };
        if let Some(fields) = self.fetched.get() {
            return Some(fields);
        }
        if !self.asked.replace(true) {
            return None;
        }
        Some(self.fetched.get_or_init(|| h.entries()))
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        match (self.local(), self.host) {
            (Some(fields), _) => header(fields, name).map(str::to_string),
            (None, Some(h)) => h.get(name),
            (None, None) => None,
        }
    }

    /// Every value of header `name`, in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        match (self.local(), self.host) {
            (Some(fields), _) => header_values(fields, name).map(str::to_string).collect(),
            (None, Some(h)) => h.values(name),
            (None, None) => Vec::new(),
        }
    }

    /// Every field, in order (one copy of them all, from a host view).
    pub fn to_vec(&self) -> Headers {
        match self.host {
            Some(h) => self.fetched.get_or_init(|| h.entries()).clone(),
            None => self.list.clone(),
        }
    }

    /// Every field, in order, as an owned list.
    pub fn into_vec(mut self) -> Headers {
        std::mem::take(self.list_mut())
    }

    /// The fields as an owned list to change; a host view is copied first.
    pub fn list_mut(&mut self) -> &mut Headers {
        if let Some(h) = self.host.take() {
            self.list = self.fetched.take().unwrap_or_else(|| h.entries());
        }
        &mut self.list
    }

    /// Adds a field (name lower-cased, as hosts deliver them).
    pub fn push(&mut self, name: &str, value: &str) {
        self.list_mut()
            .push((name.to_ascii_lowercase(), value.to_string()));
    }
}

impl From<Headers> for HeaderView {
    fn from(list: Headers) -> Self {
        HeaderView {
            list,
            ..HeaderView::default()
        }
    }
}

impl FromIterator<(String, String)> for HeaderView {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(fields: I) -> Self {
        HeaderView::from(fields.into_iter().collect::<Headers>())
    }
}

impl std::fmt::Debug for HeaderView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host {
            Some(_) => f.write_str("HeaderView(host)"),
            None => f.debug_list().entries(&self.list).finish(),
        }
    }
}

impl PartialEq for HeaderView {
    fn eq(&self, other: &Self) -> bool {
        self.to_vec() == other.to_vec()
    }
}

impl Eq for HeaderView {}

/// The first value of header `name` in `headers`, compared case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of header `name` in `headers`, in order, compared case-insensitively.
pub fn header_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether `name` is a valid header field name (an RFC 9110 `token`).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<(String, String)> {
        [("accept", "a"), ("x-api-key", "k"), ("Accept", "b")]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    struct Host;

    impl HeaderSource for Host {
        fn get(&self, name: &str) -> Option<String> {
            header(&headers(), name).map(str::to_string)
        }
        fn values(&self, name: &str) -> Vec<String> {
            header_values(&headers(), name)
                .map(str::to_string)
                .collect()
        }
        fn entries(&self) -> Headers {
            headers()
        }
    }

    /// A host that counts the calls made to it.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl HeaderSource for Counting {
        fn get(&self, name: &str) -> Option<String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Host.get(name)
        }
        fn values(&self, name: &str) -> Vec<String> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Host.values(name)
        }
        fn entries(&self) -> Headers {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Host.entries()
        }
    }

    #[test]
    fn a_host_view_asks_once_for_one_header_and_copies_all_at_the_second() {
        use std::sync::atomic::Ordering::Relaxed;
        static HOST: Counting = Counting(std::sync::atomic::AtomicUsize::new(0));
        let untouched = HeaderView::host(&HOST);
        drop(untouched);
        assert_eq!(HOST.0.load(Relaxed), 0, "nothing read, nothing asked");
        let view = HeaderView::host(&HOST);
        assert_eq!(view.get("x-api-key").as_deref(), Some("k"));
        assert_eq!(HOST.0.load(Relaxed), 1);
        assert_eq!(view.values("accept"), ["a", "b"]);
        assert_eq!(view.get("missing"), None);
        assert_eq!(view.get("ACCEPT").as_deref(), Some("a"));
        assert_eq!(view.to_vec().len(), 3);
        assert_eq!(HOST.0.load(Relaxed), 2, "one look-up, then one copy");
        assert_eq!(view.into_vec().len(), 3);
        assert_eq!(HOST.0.load(Relaxed), 2);
    }

    #[test]
    fn views_read_the_same_from_a_list_and_from_a_host() {
        static HOST: Host = Host;
        let owned = HeaderView::from(headers());
        let mut host = HeaderView::host(&HOST);
        for view in [&owned, &host] {
            assert_eq!(view.get("X-API-Key").as_deref(), Some("k"));
            assert_eq!(view.values("accept"), ["a", "b"]);
            assert_eq!(view.get("missing"), None);
        }
        assert_eq!(owned, host);
        host.push("X-New", "1");
        assert_eq!(host.get("x-new").as_deref(), Some("1"));
        assert_eq!(host.to_vec().len(), 4);
        assert_eq!(format!("{:?}", HeaderView::host(&HOST)), "HeaderView(host)");
    }

    #[test]
    fn header_lookup_ignores_case() {
        let h = headers();
        assert_eq!(header(&h, "X-API-Key"), Some("k"));
        assert_eq!(header(&h, "missing"), None);
        assert_eq!(header_values(&h, "ACCEPT").collect::<Vec<_>>(), ["a", "b"]);
        assert!(is_header_name("x-api-key"));
        assert!(!is_header_name("bad header"));
        assert!(!is_header_name(""));
    }
}

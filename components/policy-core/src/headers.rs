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
/// view ([`HeaderView::host`]): each look-up asks the host for one header,
/// and nothing is copied for headers the policy never reads. Tests, and
/// policies building a message, use an owned list (`From<Headers>`).
///
/// A host view reads the message the current head call is about: kept for a
/// later chunk or event call, it finds nothing. Take what you need with
/// [`HeaderView::get`] or [`HeaderView::to_vec`] during the head call.
#[derive(Clone, Default)]
pub struct HeaderView {
    /// Set while the fields are the host's, read on demand; `list` is then empty.
    host: Option<&'static dyn HeaderSource>,
    list: Headers,
}

impl HeaderView {
    /// A view that reads from the host on each look-up.
    pub fn host(source: &'static dyn HeaderSource) -> Self {
        HeaderView {
            host: Some(source),
            list: Vec::new(),
        }
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        match self.host {
            Some(h) => h.get(name),
            None => header(&self.list, name).map(str::to_string),
        }
    }

    /// Every value of header `name`, in order.
    pub fn values(&self, name: &str) -> Vec<String> {
        match self.host {
            Some(h) => h.values(name),
            None => header_values(&self.list, name)
                .map(str::to_string)
                .collect(),
        }
    }

    /// Every field, in order (one copy of them all, from a host view).
    pub fn to_vec(&self) -> Headers {
        match self.host {
            Some(h) => h.entries(),
            None => self.list.clone(),
        }
    }

    /// Every field, in order, as an owned list.
    pub fn into_vec(self) -> Headers {
        match self.host {
            Some(h) => h.entries(),
            None => self.list,
        }
    }

    /// The fields as an owned list to change; a host view is copied first.
    pub fn list_mut(&mut self) -> &mut Headers {
        if let Some(h) = self.host.take() {
            self.list = h.entries();
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
        HeaderView { host: None, list }
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

//! Signed XML through libxml2: strict parsing (no recovery, no network, no DTD) and exclusive
//! c14n by raw `xmlC14NDocDumpMemory` (the `libxml` crate's own c14n corrupts multi-byte
//! UTF-8 across its 4 KB chunks, docs/crates.md §1.3). The bytes that arrive are parsed once
//! and canonicalized from that tree; they are never re-serialized before being checked.

use super::canonical_tree;
use libxml::bindings;
use libxml::parser::{Parser, ParserOptions};
use libxml::tree::{Document, Node};
use std::ffi::CString;
use std::sync::Once;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum XmlError {
    #[error("XML is not well-formed: {0}")]
    Parse(String),
    #[error("XML document type declarations are not accepted")]
    Doctype,
    #[error("canonicalization failed: {0}")]
    C14n(String),
    #[error("XML exceeds {0} bytes")]
    TooLarge(usize),
}

static INIT: Once = Once::new();

fn init() {
    // SAFETY: xmlInitParser is idempotent and must run before threads use libxml2.
    INIT.call_once(|| unsafe { bindings::xmlInitParser() });
}

pub struct Xml {
    doc: Document,
}

/// Hard cap on what libxml2 is asked to parse (envelopes are small; XML payloads are
/// bounded by the leg's max_payload before they get here).
pub const MAX_XML_BYTES: usize = 256 << 20;

impl Xml {
    pub fn parse(bytes: &[u8]) -> Result<Xml, XmlError> {
        // libxml2's own diagnostic ("XML declaration allowed only at the start of the
        // document", line 2) instead of the binding's "Got a Null pointer".
        Xml::parse_located(bytes).map_err(|diagnostics| {
            if diagnostics.iter().any(|(_, m)| m.contains("document type declarations")) {
                return XmlError::Doctype;
            }
            let described: Vec<String> = diagnostics
                .into_iter()
                .take(3)
                .map(|(line, message)| match line {
                    Some(l) => format!("line {l}: {message}"),
                    None => message,
                })
                .collect();
            XmlError::Parse(if described.is_empty() { "not well-formed".into() } else { described.join("; ") })
        })
    }

    /// Like [`Xml::parse`], but a refusal keeps libxml2's diagnostics with their line numbers.
    pub fn parse_located(bytes: &[u8]) -> Result<Xml, Vec<(Option<i32>, String)>> {
        Xml::parse_with(bytes, false)
    }

    /// [`Xml::parse_located`] for a data document whose whitespace between elements means
    /// nothing (a certificate checked against its schema and rules; never signed XML, whose
    /// digests cover every character): such text nodes are left out of the tree, about a fifth
    /// of the parse and of every walk over a pretty-printed document. Whitespace that is an
    /// element's whole content, or sits beside other text, is kept (libxml2's rule). The tree
    /// is read-only: short texts live inside their nodes (XML_PARSE_COMPACT, a tenth of the
    /// parse of an 8 KB certificate), which libxml2 forbids changing afterwards.
    pub fn parse_data_located(bytes: &[u8]) -> Result<Xml, Vec<(Option<i32>, String)>> {
        Xml::parse_with(bytes, true)
    }

    fn parse_with(bytes: &[u8], data: bool) -> Result<Xml, Vec<(Option<i32>, String)>> {
        init();
        if bytes.len() > MAX_XML_BYTES {
            return Err(vec![(None, format!("document exceeds {MAX_XML_BYTES} bytes"))]);
        }
        let options = ParserOptions {
            recover: false,
            no_net: true,
            no_def_dtd: true,
            huge: false,
            no_blanks: data,
            compact: data,
            ..ParserOptions::default()
        };
        let located = |errors: Vec<libxml::error::StructuredError>| -> Vec<(Option<i32>, String)> {
            errors.into_iter().map(|e| (e.line, e.message.unwrap_or_default().trim().to_owned())).collect()
        };
        match Parser::default().parse_string_with_diagnostics(bytes, options) {
            Ok((doc, errors)) => {
                let fatal: Vec<_> =
                    errors.into_iter().filter(|e| !matches!(e.level, libxml::error::XmlErrorLevel::Warning)).collect();
                if !fatal.is_empty() {
                    return Err(located(fatal));
                }
                // SAFETY: doc_ptr is a valid document owned by `doc`.
                if unsafe { !(*doc.doc_ptr()).intSubset.is_null() } {
                    return Err(vec![(Some(1), "document type declarations are not accepted".into())]);
                }
                Ok(Xml { doc })
            }
            Err(libxml::parser::XmlParseFailure::ParseFailed(errors)) => Err(located(errors)),
            Err(other) => Err(vec![(None, other.to_string())]),
        }
    }

    pub fn root(&self) -> Option<Node> {
        self.doc.get_root_element()
    }

    pub fn document(&self) -> &Document {
        &self.doc
    }

    /// Every element whose `wsu:Id`, `Id` or `id` equals `id`. Signature references must
    /// resolve to exactly one; a second element with the same Id is a wrapping attempt.
    pub fn elements_with_id(&self, id: &str) -> Vec<Node> {
        self.elements_with_ids(&[id]).pop().unwrap_or_default()
    }

    /// [`Xml::elements_with_id`] for several ids in one walk of the tree: the elements for
    /// `ids[i]` are at `[i]`. A signature's references cost one walk together, not one each.
    pub fn elements_with_ids(&self, ids: &[&str]) -> Vec<Vec<Node>> {
        let Some(root) = self.root() else { return vec![Vec::new(); ids.len()] };
        // Each id's first place in `ids`: a repeated id is looked for once.
        let mut wanted: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
        for (i, id) in ids.iter().enumerate() {
            wanted.entry(id.as_bytes()).or_insert(i);
        }
        let mut found = vec![Vec::new(); ids.len()];
        // SAFETY: the walk reads the live tree of `self.doc`, which it does not change.
        unsafe { collect_ids(root.node_ptr(), &wanted, &mut found) };
        ids.iter().map(|id| wrapped(&root, &found[wanted[id.as_bytes()]])).collect()
    }

    /// How many elements named {`ns`}`local` the document holds, counted without allocating.
    pub fn count_elements(&self, ns: &str, local: &str) -> usize {
        let Some(root) = self.root() else { return 0 };
        let mut count = 0;
        // SAFETY: the walk reads the live tree of `self.doc`, which it does not change; names
        // and namespace hrefs are NUL-terminated strings libxml2 owns.
        unsafe {
            each_element(root.node_ptr(), |node| {
                let href = if (*node).ns.is_null() { &[][..] } else { c_bytes((*(*node).ns).href) };
                if c_bytes((*node).name) == local.as_bytes() && href == ns.as_bytes() {
                    count += 1;
                }
            })
        };
        count
    }

    /// Exclusive XML canonicalization (without comments) of `node` and its subtree: by one walk
    /// of the subtree ([`canonical_tree`]), or by libxml2 for what that walk declines and
    /// whenever inclusive prefixes are asked for.
    pub fn c14n_subtree(&self, node: &Node, inclusive_prefixes: &[String]) -> Result<Vec<u8>, XmlError> {
        if inclusive_prefixes.is_empty() {
            // SAFETY: `node` belongs to this document, which the call does not change.
            if let Some(canonical) = unsafe { canonical_tree::exclusive(node.node_ptr()) } {
                #[cfg(debug_assertions)]
                assert_eq!(
                    String::from_utf8_lossy(&canonical),
                    String::from_utf8_lossy(&self.c14n_by_libxml2(node)?),
                    "the subtree walk disagrees with libxml2"
                );
                return Ok(canonical);
            }
        }
        self.c14n_of(node, None, 1, false, inclusive_prefixes)
    }

    /// libxml2's exclusive canonical form of `node` (what the subtree walk is checked against).
    #[cfg(any(test, debug_assertions))]
    pub(super) fn c14n_by_libxml2(&self, node: &Node) -> Result<Vec<u8>, XmlError> {
        self.c14n_of(node, None, 1, false, &[])
    }

    /// Canonicalization of a subtree in any mode: 0 = C14N 1.0, 1 = exclusive, 2 = C14N 1.1
    /// (embedded document signatures use inclusive C14N, sometimes with comments).
    pub fn c14n_subtree_mode(&self, node: &Node, mode: i32, with_comments: bool) -> Result<Vec<u8>, XmlError> {
        self.c14n_of(node, None, mode, with_comments, &[])
    }

    /// A subtree's canonical form without one of its descendants: the enveloped-signature
    /// transform (XML-DSig §6.6.4) over an element that holds its own signature.
    pub fn c14n_subtree_without(
        &self,
        node: &Node,
        excluded: &Node,
        mode: i32,
        with_comments: bool,
    ) -> Result<Vec<u8>, XmlError> {
        self.c14n_of(node, Some(excluded), mode, with_comments, &[])
    }

    /// A subtree's canonical form, in linear time: libxml2 walks the document once and asks
    /// [`in_subtree`] about each node (a walk up to the subtree's root). The XPath node set
    /// `(.//. | .//@* | .//namespace::*)` used before made libxml2 search the set linearly for
    /// every node, quadratic in the element count (19,000 eb:Property elements cost 20 s of
    /// CPU before any signature was checked; issue 10.2).
    fn c14n_of(
        &self,
        node: &Node,
        excluded: Option<&Node>,
        mode: i32,
        with_comments: bool,
        inclusive_prefixes: &[String],
    ) -> Result<Vec<u8>, XmlError> {
        let prefixes: Vec<CString> = inclusive_prefixes
            .iter()
            .map(|p| CString::new(p.as_str()).map_err(|_| XmlError::C14n("NUL in a prefix".into())))
            .collect::<Result<_, _>>()?;
        let mut prefix_ptrs: Vec<*mut bindings::xmlChar> =
            prefixes.iter().map(|p| p.as_ptr() as *mut bindings::xmlChar).collect();
        prefix_ptrs.push(std::ptr::null_mut());
        let prefix_arg = if inclusive_prefixes.is_empty() { std::ptr::null_mut() } else { prefix_ptrs.as_mut_ptr() };
        // SAFETY: a fresh in-memory output buffer (no encoder), closed below on every path.
        let buffer = unsafe { bindings::xmlAllocOutputBuffer(std::ptr::null_mut()) };
        if buffer.is_null() {
            return Err(XmlError::C14n("no output buffer".into()));
        }
        let mut visible =
            Visible { root: node.node_ptr(), excluded: excluded.map_or(std::ptr::null_mut(), |e| e.node_ptr()) };
        // SAFETY: the document, the subtree root and the excluded node are live for the call;
        // `in_subtree` reads only `visible` and node pointers libxml2 hands it; the buffer is
        // valid until closed.
        let result = unsafe {
            bindings::xmlC14NExecute(
                self.doc.doc_ptr(),
                Some(in_subtree),
                &mut visible as *mut Visible as *mut std::ffi::c_void,
                mode,
                prefix_arg,
                i32::from(with_comments),
                buffer,
            )
        };
        // SAFETY: the buffer is live; its content is copied before it is closed.
        let bytes = unsafe {
            let content = bindings::xmlOutputBufferGetContent(buffer);
            let size = bindings::xmlOutputBufferGetSize(buffer);
            let bytes = if content.is_null() { Vec::new() } else { std::slice::from_raw_parts(content, size).to_vec() };
            bindings::xmlOutputBufferClose(buffer);
            bytes
        };
        if result < 0 {
            return Err(XmlError::C14n("libxml2 could not canonicalize".into()));
        }
        Ok(bytes)
    }

    /// Exclusive canonicalization of the whole document (XML attachments).
    pub fn c14n_document(&self) -> Result<Vec<u8>, XmlError> {
        let mut out: *mut bindings::xmlChar = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; libxml2 allocates `out`, freed below.
        let len = unsafe {
            bindings::xmlC14NDocDumpMemory(
                self.doc.doc_ptr(),
                std::ptr::null_mut(),
                1,
                std::ptr::null_mut(),
                0,
                &mut out,
            )
        };
        if len < 0 || out.is_null() {
            return Err(XmlError::C14n("libxml2 could not canonicalize".into()));
        }
        // SAFETY: libxml2 returned `len` bytes at `out`.
        let bytes = unsafe { std::slice::from_raw_parts(out as *const u8, len as usize).to_vec() };
        // SAFETY: `out` was allocated by libxml2's allocator.
        unsafe {
            if let Some(free) = bindings::xmlFree {
                free(out as *mut std::ffi::c_void);
            }
        }
        Ok(bytes)
    }
}

/// The nodes [`Xml::c14n_of`] renders: the subtree of `root`, less that of `excluded` (null
/// for none).
struct Visible {
    root: bindings::xmlNodePtr,
    excluded: bindings::xmlNodePtr,
}

/// libxml2's visibility question during [`Xml::c14n_of`]: is `node` in the subtree whose root
/// is `root`, and not in the excluded one? An attribute's parent is its element; a namespace
/// node (an `xmlNs`, whose `type` field sits where a node's does) is asked about with the
/// element it would be rendered on.
unsafe extern "C" fn in_subtree(
    visible: *mut std::ffi::c_void,
    node: bindings::xmlNodePtr,
    parent: bindings::xmlNodePtr,
) -> std::ffi::c_int {
    // SAFETY: `visible` is the `Visible` c14n_of passed; libxml2 passes live node pointers
    // (or null) of the document being canonicalized.
    unsafe {
        let visible = &*(visible as *const Visible);
        let mut current =
            if node.is_null() || (*node).type_ == bindings::xmlElementType_XML_NAMESPACE_DECL { parent } else { node };
        while !current.is_null() {
            if current == visible.excluded {
                return 0;
            }
            if current == visible.root {
                return 1;
            }
            current = (*current).parent;
        }
    }
    0
}

/// Every element under `root` (itself included) whose `wsu:Id`, `Id` or `id` is `id`, in
/// document order, read from libxml2's tree without allocating: a wrapped walk (one `Node` per
/// child, three property copies per element) cost 2% of all CPU on the message path.
///
/// # Safety
/// `root` is a live element of a document that is not changed during the call.
unsafe fn collect_ids(
    root: bindings::xmlNodePtr,
    wanted: &std::collections::HashMap<&[u8], usize>,
    found: &mut [Vec<bindings::xmlNodePtr>],
) {
    let wsu = super::ns::WSU.as_bytes();
    // SAFETY: the caller's promise; `each_id` reads only the live element it is given.
    unsafe {
        each_element(root, |node| {
            each_id(node, wsu, |value| {
                if let Some(&i) = wanted.get(value) {
                    // An element carrying the same id twice (Id and wsu:Id) is one target.
                    if found[i].last() != Some(&node) {
                        found[i].push(node);
                    }
                }
            })
        })
    }
}

/// Calls `visit` for every element under `root` (itself included), in document order,
/// following libxml2's own links.
///
/// # Safety
/// `root` is a live element of a document that is not changed during the call.
unsafe fn each_element(root: bindings::xmlNodePtr, mut visit: impl FnMut(bindings::xmlNodePtr)) {
    let mut node = root;
    // SAFETY (whole walk): child, sibling and parent links of a live tree.
    unsafe {
        while !node.is_null() {
            if (*node).type_ == bindings::xmlElementType_XML_ELEMENT_NODE {
                visit(node);
                if !(*node).children.is_null() {
                    node = (*node).children;
                    continue;
                }
            }
            // Next in document order: a sibling, or the sibling of the nearest ancestor that
            // has one, never leaving `root`'s subtree.
            while node != root && (*node).next.is_null() {
                node = (*node).parent;
            }
            if node == root {
                break;
            }
            node = (*node).next;
        }
    }
}

/// Calls `visit` with the value of each id the element carries: `wsu:Id`, or `Id` or `id`
/// without a namespace.
unsafe fn each_id(element: bindings::xmlNodePtr, wsu: &[u8], mut visit: impl FnMut(&[u8])) {
    // SAFETY: the caller's element is live; its attribute list and their namespaces too.
    unsafe {
        let mut attr = (*element).properties;
        while !attr.is_null() {
            let name = c_bytes((*attr).name);
            let ns = (*attr).ns;
            let named = match (name, ns.is_null()) {
                (b"Id", false) => c_bytes((*ns).href) == wsu,
                (b"Id" | b"id", true) => true,
                _ => false,
            };
            // Only an Id attribute's value is read (a copy, as libxml2 joins its text).
            if named {
                let value = bindings::xmlNodeListGetString((*element).doc, (*attr).children, 1);
                if !value.is_null() {
                    visit(c_bytes(value));
                    bindings::xmlFree.expect("libxml2 sets xmlFree")(value as *mut std::ffi::c_void);
                }
            }
            attr = (*attr).next;
        }
    }
}

/// The wrapped nodes for `targets`, found from `root` by their chains of ancestors. Each
/// parent on a path has its children wrapped once, whatever the number of targets under it,
/// so many elements with the same Id stay linear (a wrapping attempt is refused by the caller).
fn wrapped(root: &Node, targets: &[bindings::xmlNodePtr]) -> Vec<Node> {
    let mut by_pointer: std::collections::HashMap<bindings::xmlNodePtr, Node> =
        std::collections::HashMap::from([(root.node_ptr(), root.clone())]);
    let mut expanded = std::collections::HashSet::new();
    let mut found = Vec::with_capacity(targets.len());
    for &target in targets {
        let mut chain = Vec::new();
        let mut current = target;
        // SAFETY: parent links of the live tree `root` belongs to.
        unsafe {
            while !current.is_null() && current != root.node_ptr() {
                chain.push(current);
                current = (*current).parent;
            }
        }
        if current.is_null() {
            continue;
        }
        let mut parent = root.node_ptr();
        for step in chain.into_iter().rev() {
            if expanded.insert(parent)
                && let Some(node) = by_pointer.get(&parent).cloned()
            {
                by_pointer.extend(node.get_child_elements().into_iter().map(|c| (c.node_ptr(), c)));
            }
            parent = step;
        }
        if let Some(node) = by_pointer.get(&target) {
            found.push(node.clone());
        }
    }
    found
}

/// The line an element starts on.
pub fn line_of(node: &Node) -> i64 {
    // SAFETY: the node pointer is valid while `node` lives.
    unsafe { bindings::xmlGetLineNo(node.node_ptr()) as i64 }
}

/// Namespace URI and local name of an element.
pub fn qname(node: &Node) -> (String, String) {
    (node.get_namespace().map(|n| n.get_href()).unwrap_or_default(), node.get_name())
}

/// Whether the element is `{ns}local`, read in place (no copies of the name and namespace:
/// this runs for every child looked at on the message path).
pub fn is(node: &Node, ns: &str, local: &str) -> bool {
    let ptr = node.node_ptr();
    // SAFETY: a wrapped node's pointer is live while `node` is; its name and its namespace's
    // href are NUL-terminated strings libxml2 owns (or null).
    unsafe {
        if ptr.is_null() {
            return false;
        }
        let href = if (*ptr).ns.is_null() { &[][..] } else { c_bytes((*(*ptr).ns).href) };
        c_bytes((*ptr).name) == local.as_bytes() && href == ns.as_bytes()
    }
}

/// The bytes of a libxml2 string, empty for null.
///
/// # Safety
/// `p` is null or a NUL-terminated string that outlives the returned slice.
pub(super) unsafe fn c_bytes<'a>(p: *const bindings::xmlChar) -> &'a [u8] {
    if p.is_null() { &[] } else { unsafe { std::ffi::CStr::from_ptr(p as *const std::ffi::c_char) }.to_bytes() }
}

pub fn child(node: &Node, ns: &str, local: &str) -> Option<Node> {
    node.get_child_elements().into_iter().find(|c| is(c, ns, local))
}

pub fn children(node: &Node, ns: &str, local: &str) -> Vec<Node> {
    node.get_child_elements().into_iter().filter(|c| is(c, ns, local)).collect()
}

/// Text content with whitespace removed (base64 values are often wrapped).
/// The trimmed text of the element reached from `node` through the first child element of
/// each name in `path` (any namespace); None when one is missing or the text is blank. Read
/// through libxml2's links: no node on the way is wrapped (wrapping registers each one with
/// the document, and document checks read dozens of such paths).
pub fn text_at(node: &Node, path: &[&str]) -> Option<String> {
    // SAFETY: child and sibling links of the live tree `node` belongs to, which is not
    // changed; names are NUL-terminated strings libxml2 owns; the content is freed once.
    unsafe {
        let mut current = node.node_ptr();
        for name in path {
            let mut child = (*current).children;
            loop {
                if child.is_null() {
                    return None;
                }
                if (*child).type_ == bindings::xmlElementType_XML_ELEMENT_NODE
                    && c_bytes((*child).name) == name.as_bytes()
                {
                    break;
                }
                child = (*child).next;
            }
            current = child;
        }
        let content = bindings::xmlNodeGetContent(current);
        if content.is_null() {
            return None;
        }
        let text = String::from_utf8_lossy(c_bytes(content)).trim().to_owned();
        bindings::xmlFree.expect("libxml2 sets xmlFree")(content as *mut std::ffi::c_void);
        Some(text).filter(|t| !t.is_empty())
    }
}

/// Every element under `node` (not itself) named `local` in any namespace, in document
/// order; only the elements on the paths to them are wrapped.
pub fn descendants_named(node: &Node, local: &str) -> Vec<Node> {
    let root = node.node_ptr();
    let mut found = Vec::new();
    // SAFETY: the walk reads the live tree `node` belongs to, which it does not change.
    unsafe {
        each_element(root, |element| {
            if element != root && c_bytes((*element).name) == local.as_bytes() {
                found.push(element);
            }
        })
    };
    wrapped(node, &found)
}

pub fn compact_text(node: &Node) -> String {
    node.get_content().chars().filter(|c| !c.is_whitespace()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WSU: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";

    #[test]
    fn a_refusal_says_what_libxml2_found_and_where() {
        // Issue 10.9: a comment before the root is fine; before the XML declaration it is not,
        // and the error says why (it used to say "Got a Null pointer").
        assert!(Xml::parse(b"<!-- c -->\n<a/>").is_ok());
        let err = Xml::parse(b"<!-- c -->\n<?xml version=\"1.0\"?>\n<a/>").err().unwrap().to_string();
        assert!(err.contains("line 2") && err.contains("XML declaration allowed only at the start"), "{err}");
        assert_eq!(Xml::parse(b"<!DOCTYPE a []><a/>").err(), Some(XmlError::Doctype));
    }

    #[test]
    fn exclusive_c14n_of_a_subtree() {
        let doc = format!(
            r#"<S12:Envelope xmlns:S12="urn:s" xmlns:wsu="{WSU}" xmlns:unused="urn:u"><S12:Header><eb:Messaging xmlns:eb="urn:eb" wsu:Id="m1"   b="2" a="1"><eb:X/><!-- c --></eb:Messaging></S12:Header></S12:Envelope>"#
        );
        let xml = Xml::parse(doc.as_bytes()).unwrap();
        let nodes = xml.elements_with_id("m1");
        assert_eq!(nodes.len(), 1);
        let c14n = String::from_utf8(xml.c14n_subtree(&nodes[0], &[]).unwrap()).unwrap();
        assert_eq!(
            c14n,
            format!(
                r#"<eb:Messaging xmlns:eb="urn:eb" xmlns:wsu="{WSU}" a="1" b="2" wsu:Id="m1"><eb:X></eb:X></eb:Messaging>"#
            )
        );
        let with_prefix = String::from_utf8(xml.c14n_subtree(&nodes[0], &["S12".into()]).unwrap()).unwrap();
        assert!(with_prefix.starts_with(r#"<eb:Messaging xmlns:S12="urn:s" xmlns:eb="urn:eb""#), "{with_prefix}");
    }

    #[test]
    fn multibyte_text_survives_large_c14n() {
        let text = "é€😀".repeat(40_000);
        let doc = format!(r#"<r xmlns:wsu="{WSU}"><p wsu:Id="x">{text}</p></r>"#);
        let xml = Xml::parse(doc.as_bytes()).unwrap();
        let node = &xml.elements_with_id("x")[0];
        let c14n = String::from_utf8(xml.c14n_subtree(node, &[]).unwrap()).unwrap();
        assert!(c14n.contains(&text));
        assert!(!c14n.contains('\u{FFFD}'));
    }

    #[test]
    fn strict_parsing() {
        assert!(matches!(Xml::parse(b"<a><b></a>"), Err(XmlError::Parse(_))));
        assert_eq!(
            Xml::parse(b"<?xml version='1.0'?><!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>").err(),
            Some(XmlError::Doctype)
        );
        assert!(Xml::parse(b"<a>&undefined;</a>").is_err());
    }

    #[test]
    fn an_element_is_its_namespace_and_local_name_whatever_the_prefix() {
        let xml =
            Xml::parse(br#"<a:r xmlns:a="urn:x" xmlns="urn:d"><b:r xmlns:b="urn:x"/><r/><r xmlns=""/></a:r>"#).unwrap();
        let root = xml.root().unwrap();
        assert!(is(&root, "urn:x", "r") && !is(&root, "urn:x", "a:r") && !is(&root, "", "r"));
        let kids = root.get_child_elements();
        assert!(is(&kids[0], "urn:x", "r"), "another prefix, same namespace");
        assert!(is(&kids[1], "urn:d", "r") && !is(&kids[1], "urn:x", "r"), "the default namespace");
        assert!(is(&kids[2], "", "r") && !is(&kids[2], "urn:d", "r"), "no namespace");
        assert!(!is(&kids[2], "", "rr") && !is(&kids[2], "", ""));
    }

    #[test]
    fn elements_are_counted_by_namespace_and_local_name_at_any_depth() {
        let xml = Xml::parse(
            br#"<e:r xmlns:e="urn:e" xmlns:f="urn:e"><e:m/><x><f:m><e:m>t</e:m></f:m></x><m/><g:m xmlns:g="urn:g"/></e:r>"#,
        )
        .unwrap();
        assert_eq!(xml.count_elements("urn:e", "m"), 3);
        assert_eq!(xml.count_elements("", "m"), 1);
        assert_eq!(xml.count_elements("urn:e", "r"), 1);
        assert_eq!(xml.count_elements("urn:g", "x"), 0);
    }

    #[test]
    fn text_and_descendants_by_local_name() {
        let xml = Xml::parse(
            br#"<r xmlns:p="urn:p"><a><p:b> one &amp; two </p:b><b>second</b></a><c/><a><b>  </b></a><x><b>deep<b>deeper</b></b></x></r>"#,
        )
        .unwrap();
        let root = xml.root().unwrap();
        assert_eq!(text_at(&root, &["a", "b"]).as_deref(), Some("one & two"));
        assert_eq!(text_at(&root, &["c"]), None);
        assert_eq!(text_at(&root, &["a", "z"]), None);
        assert_eq!(text_at(&root, &[]).as_deref(), Some("one & two second  deepdeeper"));
        let found: Vec<String> = descendants_named(&root, "b").iter().map(|b| b.get_content()).collect();
        assert_eq!(found, [" one & two ", "second", "  ", "deepdeeper", "deeper"]);
        let a = crate::wss::xml::descendants_named(&root, "a");
        assert_eq!(a.len(), 2);
        assert_eq!(text_at(&a[1], &["b"]), None);
        assert!(descendants_named(&a[0], "a").is_empty());
    }

    #[test]
    fn a_data_document_drops_only_the_whitespace_between_elements() {
        let text = b"<r>\n  <a>  </a>\n  <b>x <i>y</i> </b>\n</r>";
        let data = Xml::parse_data_located(text).unwrap();
        let root = data.root().unwrap();
        assert_eq!(root.get_child_nodes().len(), 2, "only the two elements");
        assert_eq!(child(&root, "", "a").unwrap().get_content(), "  ");
        assert_eq!(child(&root, "", "b").unwrap().get_content(), "x y ");
        let kept = Xml::parse_located(text).unwrap();
        assert_eq!(kept.root().unwrap().get_child_nodes().len(), 5);
        assert_eq!(line_of(&child(&root, "", "b").unwrap()), 3);
    }

    #[test]
    fn several_ids_in_one_walk_find_what_each_alone_finds() {
        let doc = format!(r#"<r xmlns:wsu="{WSU}"><a wsu:Id="x" Id="x"/><b Id="y"><c id="x"/></b><d wsu:Id="z"/></r>"#);
        let xml = Xml::parse(doc.as_bytes()).unwrap();
        let ids = ["x", "y", "none", "x", "z"];
        let names = |nodes: &[Node]| nodes.iter().map(|n| n.get_name()).collect::<Vec<_>>();
        let together: Vec<Vec<String>> = xml.elements_with_ids(&ids).iter().map(|n| names(n)).collect();
        let alone: Vec<Vec<String>> = ids.iter().map(|id| names(&xml.elements_with_id(id))).collect();
        assert_eq!(together, alone);
        assert_eq!(together[0], ["a", "c"], "an element with Id and wsu:Id alike is found once");
        assert!(Xml::parse(b"<r/>").unwrap().elements_with_ids(&["a", "b"]).iter().all(Vec::is_empty));
    }

    #[test]
    fn duplicate_ids_are_all_found() {
        let doc = format!(r#"<r xmlns:wsu="{WSU}"><a wsu:Id="x"/><b Id="x"/><c id="y"/></r>"#);
        let xml = Xml::parse(doc.as_bytes()).unwrap();
        assert_eq!(xml.elements_with_id("x").len(), 2);
    }

    #[test]
    fn ids_are_found_in_document_order_in_every_place_and_only_in_the_three_names() {
        let doc = format!(
            r#"<r xmlns:wsu="{WSU}" xmlns:o="urn:other" Id="a&amp;b"><p>text<q wsu:Id="x"><s id="x"/></q></p><o:t o:Id="x" wsu:id="x"/><u Id="x"/>tail</r>"#
        );
        let xml = Xml::parse(doc.as_bytes()).unwrap();
        let names: Vec<String> = xml.elements_with_id("x").iter().map(|n| n.get_name()).collect();
        assert_eq!(names, ["q", "s", "u"], "another namespace's Id, and wsu:id, are not IDs");
        assert_eq!(
            xml.elements_with_id("a&b").iter().map(|n| n.get_name()).collect::<Vec<_>>(),
            ["r"],
            "the root, unescaped"
        );
        assert!(xml.elements_with_id("a&amp;b").is_empty() && xml.elements_with_id("").is_empty());
        // Many elements with one Id under one parent: all found, each parent's children wrapped once.
        let many = format!(r#"<r xmlns:wsu="{WSU}"><p>{}</p></r>"#, r#"<e wsu:Id="d"/>"#.repeat(20_000));
        assert_eq!(Xml::parse(many.as_bytes()).unwrap().elements_with_id("d").len(), 20_000);
        // A found node is the document's own: c14n of it works as before.
        let q = &xml.elements_with_id("x")[0];
        assert!(String::from_utf8(xml.c14n_subtree(q, &[]).unwrap()).unwrap().starts_with("<q "));
    }
}

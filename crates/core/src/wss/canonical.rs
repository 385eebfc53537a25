//! Exclusive XML canonicalization (without comments, no inclusive prefixes) of an element this
//! access point wrote itself, streamed from its text. Signing eb:Messaging and the Body of an
//! envelope then needs no libxml2 tree of the unsigned envelope: parsing it and canonicalizing
//! two subtrees through libxml2 was about half of what signing cost besides the key operation.
//!
//! It covers what our writers produce: elements, attributes, namespace declarations, and text
//! with entity and character references. It declines (`None`) anything else — comments,
//! CDATA, processing instructions, a DOCTYPE, whitespace characters written literally in an
//! attribute value (they would need attribute-value normalization), a literal carriage return
//! in text (line-end normalization), characters XML does not allow — and the caller then
//! canonicalizes with libxml2. Debug builds compare every use with libxml2's result.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// The exclusive canonical form of `element` (one element, nothing around it), whose
/// ancestors declare `inherited` (prefix, namespace URI; "" is the default namespace).
pub fn exclusive(element: &str, inherited: &[(&str, &str)]) -> Option<String> {
    walk(element, inherited, |_, _, _| Some(()))
}

/// A child element of a canonicalized element, canonicalized on its own.
#[derive(Debug, PartialEq)]
pub struct Child {
    pub namespace: String,
    pub local: String,
    pub canonical: String,
}

/// Each child element of `parent` (one element that declares every namespace it uses, as a
/// canonical form does), canonicalized on its own: the children of a `ds:SignedInfo` already
/// canonicalized are its `ds:Reference`s as an NRR receipt copies them, without asking
/// libxml2 to canonicalize each one over the whole document again.
pub fn children(parent: &str) -> Option<Vec<Child>> {
    let mut found = Vec::new();
    walk(parent, &[], |state, child, range| {
        let inherited: Vec<(&str, &str)> = state.declared.iter().map(|(p, u)| (p.as_str(), u.as_str())).collect();
        let local = split(&child.name).1.to_owned();
        found.push(Child {
            namespace: child.namespace.clone(),
            local,
            canonical: exclusive(&parent[range], &inherited)?,
        });
        Some(())
    })?;
    Some(found)
}

/// Canonicalizes `element`; `on_child` sees each child of the apex once it is closed, with
/// the state back at the apex's scope and the child's byte range in `element`.
fn walk(
    element: &str,
    inherited: &[(&str, &str)],
    mut on_child: impl FnMut(&State, &Open, std::ops::Range<usize>) -> Option<()>,
) -> Option<String> {
    let mut reader = Reader::from_str(element);
    reader.config_mut().check_end_names = true;
    let mut state = State {
        out: String::with_capacity(element.len() + 256),
        declared: inherited.iter().map(|(p, u)| ((*p).to_owned(), (*u).to_owned())).collect(),
        rendered: Vec::new(),
        open: Vec::new(),
    };
    let mut finished = false;
    let mut child_start = 0;
    loop {
        let before = usize::try_from(reader.buffer_position()).ok()?;
        match reader.read_event().ok()? {
            Event::Start(start) if !finished => {
                if state.open.len() == 1 {
                    child_start = before;
                }
                state.open(&start)?;
            }
            Event::Empty(start) if !finished => {
                state.open(&start)?;
                let closed = state.close()?;
                if state.open.len() == 1 {
                    on_child(&state, &closed, before..usize::try_from(reader.buffer_position()).ok()?)?;
                }
                finished = state.open.is_empty();
            }
            Event::End(_) => {
                let closed = state.close()?;
                if state.open.len() == 1 {
                    on_child(&state, &closed, child_start..usize::try_from(reader.buffer_position()).ok()?)?;
                }
                finished = state.open.is_empty();
            }
            Event::Text(text) if !state.open.is_empty() => {
                let text = text.decode().ok()?;
                if text.contains('\r') || text.contains("]]>") || !text.chars().all(is_xml_char) {
                    return None;
                }
                text.chars().for_each(|c| escape_text(c, &mut state.out));
            }
            Event::GeneralRef(reference) if !state.open.is_empty() => {
                let c = match reference.resolve_char_ref().ok()? {
                    Some(c) => c,
                    None => predefined(&reference.decode().ok()?)?,
                };
                if !is_xml_char(c) {
                    return None;
                }
                escape_text(c, &mut state.out);
            }
            Event::Eof if finished => return Some(state.out),
            _ => return None,
        }
    }
}

/// An element open in the output: its name, and how many declarations and rendered
/// namespaces were in scope before it.
struct Open {
    name: String,
    namespace: String,
    declared: usize,
    rendered: usize,
}

struct State {
    out: String,
    /// Namespace declarations in scope, innermost last.
    declared: Vec<(String, String)>,
    /// Namespace declarations written on output ancestors, innermost last.
    rendered: Vec<(String, String)>,
    open: Vec<Open>,
}

impl State {
    fn open(&mut self, start: &BytesStart<'_>) -> Option<()> {
        let name = std::str::from_utf8(start.name().into_inner()).ok()?.to_owned();
        let mut scope =
            Open { name, namespace: String::new(), declared: self.declared.len(), rendered: self.rendered.len() };
        let mut attributes: Vec<(String, String)> = Vec::new();
        for attribute in start.attributes() {
            let attribute = attribute.ok()?;
            let key = std::str::from_utf8(attribute.key.into_inner()).ok()?;
            let raw = std::str::from_utf8(&attribute.value).ok()?;
            if raw.contains(['\t', '\n', '\r', '<']) {
                return None;
            }
            let value = quick_xml::escape::unescape(raw).ok()?;
            if !value.chars().all(is_xml_char) {
                return None;
            }
            if key == "xmlns" {
                self.declared.push((String::new(), value.into_owned()));
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                if prefix == "xml" || prefix == "xmlns" || value.is_empty() {
                    return None;
                }
                self.declared.push((prefix.to_owned(), value.into_owned()));
            } else {
                attributes.push((key.to_owned(), value.into_owned()));
            }
        }
        let (prefix, _) = split(&scope.name);
        let element_namespace = match self.lookup(prefix) {
            Some(uri) => uri.to_owned(),
            None if prefix.is_empty() => String::new(),
            None => return None,
        };
        // Namespaces the element visibly uses (its own, its attributes' prefixes), and its
        // attributes keyed as c14n sorts them: namespace URI, then local name.
        scope.namespace.clone_from(&element_namespace);
        let mut used: Vec<(String, String)> = vec![(prefix.to_owned(), element_namespace)];
        let mut sorted: Vec<(String, &str, &str, &str)> = Vec::with_capacity(attributes.len());
        for (key, value) in &attributes {
            let (prefix, local) = split(key);
            let namespace = if prefix.is_empty() { String::new() } else { self.lookup(prefix)?.to_owned() };
            if !prefix.is_empty() && prefix != "xml" {
                used.push((prefix.to_owned(), namespace.clone()));
            }
            sorted.push((namespace, local, key, value));
        }
        sorted.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        if sorted.windows(2).any(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1) {
            return None;
        }
        used.sort();
        used.dedup_by(|a, b| a.0 == b.0);
        self.out.push('<');
        self.out.push_str(&scope.name);
        for (prefix, uri) in used {
            let shown = self.rendered.iter().rev().find(|(p, _)| *p == prefix).map(|(_, u)| u.as_str());
            // Not repeated when an output ancestor wrote the same; the default namespace
            // counts as "" until one is written (then `xmlns=""` undoes it).
            if shown.unwrap_or("") == uri && (shown.is_some() || prefix.is_empty()) {
                continue;
            }
            self.out.push_str(if prefix.is_empty() { " xmlns" } else { " xmlns:" });
            self.out.push_str(&prefix);
            self.out.push_str("=\"");
            uri.chars().for_each(|c| escape_attribute(c, &mut self.out));
            self.out.push('"');
            self.rendered.push((prefix, uri));
        }
        for (_, _, key, value) in sorted {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("=\"");
            value.chars().for_each(|c| escape_attribute(c, &mut self.out));
            self.out.push('"');
        }
        self.out.push('>');
        self.open.push(scope);
        Some(())
    }

    /// Closes the innermost open element (None when there is none).
    fn close(&mut self) -> Option<Open> {
        let scope = self.open.pop()?;
        self.out.push_str("</");
        self.out.push_str(&scope.name);
        self.out.push('>');
        self.declared.truncate(scope.declared);
        self.rendered.truncate(scope.rendered);
        Some(scope)
    }

    fn lookup(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(XML_NS);
        }
        self.declared.iter().rev().find(|(p, _)| p == prefix).map(|(_, u)| u.as_str()).filter(|u| !u.is_empty())
    }
}

fn split(name: &str) -> (&str, &str) {
    name.split_once(':').unwrap_or(("", name))
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// XML 1.0's `Char` production.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn escape_text(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        '\r' => out.push_str("&#xD;"),
        c => out.push(c),
    }
}

/// An attribute value's character as canonical XML writes it, so that parsing and
/// canonicalizing it gives back the same bytes.
pub fn escape_attribute(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '"' => out.push_str("&quot;"),
        '\t' => out.push_str("&#x9;"),
        '\n' => out.push_str("&#xA;"),
        '\r' => out.push_str("&#xD;"),
        c => out.push(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wss::xml::Xml;

    const CONTEXT: [(&str, &str); 3] = [("a", "urn:a"), ("b", "urn:b"), ("", "urn:default")];

    /// libxml2's exclusive c14n of the root's first child, with `element` placed under a root
    /// that declares `CONTEXT`.
    fn libxml2(element: &str) -> String {
        let document = format!(r#"<a:root xmlns:a="urn:a" xmlns:b="urn:b" xmlns="urn:default">{element}</a:root>"#);
        let xml = Xml::parse(document.as_bytes()).unwrap();
        let root = xml.root().unwrap();
        let first = root.get_child_elements().into_iter().next().unwrap();
        String::from_utf8(xml.c14n_subtree(&first, &[]).unwrap()).unwrap()
    }

    #[test]
    fn agrees_with_libxml2() {
        for element in [
            r#"<a:x/>"#,
            r#"<a:x b:z="2" y="1" a:w="0"><b:y/>t</a:x>"#,
            r#"<x>default</x>"#,
            r#"<a:x><y xmlns=""><z/></y></a:x>"#,
            r#"<a:x xmlns:c="urn:c" xmlns:unused="urn:u"><c:y c:q="1"/><a:z/></a:x>"#,
            r#"<a:x xmlns:a="urn:other"><a:y xmlns:a="urn:a"/></a:x>"#,
            r#"<a:x v="&amp;&lt;&gt;&quot;&apos;&#9;&#10;&#13;&#233;">&amp;&lt;&gt;&quot;&apos;&#13;&#x1F600;é "q" 'a'</a:x>"#,
            r#"<a:x xml:lang="es" z="1"><b:y xml:lang="en"/></a:x>"#,
            r#"<a:x	 z = '1'  ></a:x   >"#,
            r#"<a:x><a:x><a:x/></a:x></a:x>"#,
            "<a:x>\n  line\ttab\n</a:x>",
            r#"<y xmlns="urn:y"><a:x><z/></a:x></y>"#,
        ] {
            assert_eq!(exclusive(element, &CONTEXT).as_deref(), Some(libxml2(element).as_str()), "{element}");
        }
    }

    #[test]
    fn declines_what_it_does_not_cover() {
        for element in [
            "<a:x><!-- c --></a:x>",
            "<a:x><![CDATA[c]]></a:x>",
            "<a:x><?pi x?></a:x>",
            "<a:x v=\"a\nb\"/>",
            "<a:x>a\r\nb</a:x>",
            "<a:x>&unknown;</a:x>",
            "<a:x>\u{1}</a:x>",
            "<a:x>&#1;</a:x>",
            "<c:x/>",
            "<a:x c:y=\"1\"/>",
            "<a:x b:y=\"1\" a:y=\"2\" xmlns:b=\"urn:a\"/>",
            "<a:x/><a:y/>",
            "<a:x>",
            "<a:x></a:y>",
            "text<a:x/>",
            "<a:x/>text",
            "<a:x xmlns:d=\"\"/>",
        ] {
            assert_eq!(exclusive(element, &CONTEXT), None, "{element}");
        }
    }

    #[test]
    fn children_of_a_canonical_element_are_canonical_on_their_own() {
        let document = concat!(
            r#"<S:E xmlns:S="urn:s" xmlns:ds="urn:ds" xmlns:ec="urn:ec" xmlns:u="urn:u"><S:H>"#,
            r#"<ds:SignedInfo><ds:CanonicalizationMethod Algorithm="c"><ec:InclusiveNamespaces PrefixList="S u"/>"#,
            r##"</ds:CanonicalizationMethod><ds:Reference URI="#m" u:x="1"><ds:Transforms><ds:Transform Algorithm="t">"##,
            r#"<ec:InclusiveNamespaces PrefixList="S"/></ds:Transform></ds:Transforms><ds:DigestValue>ab&#13;c=</ds:DigestValue>"#,
            r#"</ds:Reference>  <ds:Reference URI="cid:p" xmlns:ds="urn:ds"/><other xmlns="urn:o">x</other></ds:SignedInfo>"#,
            r#"</S:H></S:E>"#
        );
        let xml = Xml::parse(document.as_bytes()).unwrap();
        let signed_info = crate::wss::xml::child(
            &crate::wss::xml::child(&xml.root().unwrap(), "urn:s", "H").unwrap(),
            "urn:ds",
            "SignedInfo",
        )
        .unwrap();
        for prefixes in [vec![], vec!["S".to_owned(), "u".to_owned()]] {
            let parent = String::from_utf8(xml.c14n_subtree(&signed_info, &prefixes).unwrap()).unwrap();
            let found = children(&parent).unwrap();
            let expected: Vec<Child> = signed_info
                .get_child_elements()
                .iter()
                .map(|c| Child {
                    namespace: c.get_namespace().map(|n| n.get_href()).unwrap_or_default(),
                    local: c.get_name(),
                    canonical: String::from_utf8(xml.c14n_subtree(c, &[]).unwrap()).unwrap(),
                })
                .collect();
            assert_eq!(found, expected);
        }
    }

    use proptest::prelude::*;

    /// Elements from a small grammar that reaches every rule above: prefixed and unprefixed
    /// names, local and inherited declarations (some unused, some redeclaring), attributes in
    /// every namespace, `xml:lang`, and text and values with references and non-ASCII.
    fn element() -> impl Strategy<Value = String> {
        let name = prop::sample::select(vec!["a:e", "b:e", "c:f", "e", "a:g"]);
        let declaration = prop::sample::select(vec![
            "",
            r#" xmlns:c="urn:c""#,
            r#" xmlns="""#,
            r#" xmlns="urn:z""#,
            r#" xmlns:a="urn:b""#,
        ]);
        let attribute = prop::sample::select(vec![
            "",
            r#" v="1""#,
            r#" b:v="&amp;&#10;""#,
            r#" a:w="&quot;é""#,
            r#" xml:lang="es""#,
            r#" c:v="x""#,
        ]);
        let text = prop::sample::select(vec!["", "t", "&lt;&amp;&gt;", "&#13;&#x9;", " é ", "\n"]);
        let leaf = (name.clone(), declaration.clone(), attribute.clone(), text.clone())
            .prop_map(|(n, d, a, t)| format!("<{n}{d}{a} xmlns:c=\"urn:c\">{t}</{n}>"));
        leaf.prop_recursive(3, 12, 3, move |inner| {
            (name.clone(), declaration.clone(), attribute.clone(), text.clone(), prop::collection::vec(inner, 0..3))
                .prop_map(|(n, d, a, t, kids)| format!("<{n}{d}{a} xmlns:c=\"urn:c\">{t}{}</{n}>", kids.concat()))
        })
    }

    proptest! {
        #[test]
        fn agrees_with_libxml2_on_generated_elements(element in element()) {
            // Duplicate attributes after a redeclaration are refused by both.
            if let Ok(document) = Xml::parse(format!(r#"<a:root xmlns:a="urn:a" xmlns:b="urn:b" xmlns="urn:default">{element}</a:root>"#).as_bytes()) {
                drop(document);
                prop_assert_eq!(exclusive(&element, &CONTEXT), Some(libxml2(&element)));
            } else {
                prop_assert_eq!(exclusive(&element, &CONTEXT), None);
            }
        }
    }
}

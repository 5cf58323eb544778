//! EC2's XML responses: the `<ActionResponse xmlns=...>` envelope with its request id, EC2's
//! `<item>` lists, and the `<Response><Errors>` envelope of a failure.

use std::fmt::Display;

/// The EC2 API version podip speaks (the one every SDK sends as `Version`).
pub const API_VERSION: &str = "2016-11-15";

/// An XML document being written; every text is escaped.
#[derive(Debug, Default)]
pub struct Xml {
    out: String,
}

impl Xml {
    /// `<tag>`.
    pub fn open(&mut self, tag: &str) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `</tag>`.
    pub fn close(&mut self, tag: &str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag>text</tag>`.
    pub fn leaf(&mut self, tag: &str, text: impl Display) -> &mut Self {
        self.open(tag);
        // quick-xml's escaping: the five XML entities, nothing else.
        self.out.push_str(&quick_xml::escape::escape(text.to_string()));
        self.close(tag)
    }

    /// `<tag>` then `<item>...</item>` for each of `items`, written by `each`, then `</tag>`.
    pub fn items<T>(
        &mut self,
        tag: &str,
        items: impl IntoIterator<Item = T>,
        mut each: impl FnMut(&mut Xml, T),
    ) -> &mut Self {
        self.open(tag);
        for i in items {
            self.open("item");
            each(self, i);
            self.close("item");
        }
        self.close(tag)
    }

    /// An EC2 tag set: `<tagSet><item><key/><value/></item>...</tagSet>`.
    pub fn tags<'a>(&mut self, tags: impl IntoIterator<Item = (&'a String, &'a String)>) -> &mut Self {
        self.items("tagSet", tags, |x, (k, v)| {
            x.leaf("key", k).leaf("value", v);
        })
    }
}

/// A successful response of `action`: the envelope around what `body` writes.
pub fn response(action: &str, request_id: &str, body: impl FnOnce(&mut Xml)) -> String {
    let mut x = Xml::default();
    x.out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x.out.push_str(&format!(r#"<{action}Response xmlns="http://ec2.amazonaws.com/doc/{API_VERSION}/">"#));
    x.leaf("requestId", request_id);
    body(&mut x);
    x.close(&format!("{action}Response"));
    x.out
}

/// EC2's error envelope.
pub fn error(code: &str, message: &str, request_id: &str) -> String {
    let mut x = Xml::default();
    x.out.push_str(r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    x.open("Response").open("Errors").open("Error").leaf("Code", code).leaf("Message", message);
    x.close("Error").close("Errors").leaf("RequestID", request_id).close("Response");
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_envelopes_are_ec2s() {
        let r = response("DeleteNetworkInterface", "r-1", |x| {
            x.leaf("return", "a<b&\"c\"");
        });
        assert!(r.contains(r#"<DeleteNetworkInterfaceResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">"#));
        assert!(r.contains("<return>a&lt;b&amp;&quot;c&quot;</return>"), "{r}");
        let e = error("InvalidNetworkInterfaceID.NotFound", "no <such>", "r-2");
        assert!(e.ends_with("<Response><Errors><Error><Code>InvalidNetworkInterfaceID.NotFound</Code><Message>no &lt;such&gt;</Message></Error></Errors><RequestID>r-2</RequestID></Response>"), "{e}");
    }
}

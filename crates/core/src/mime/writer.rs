//! Writing a SwA `multipart/related` body. Only the framing is produced here; the runtime
//! streams each payload between [`part_head`] and the next head or [`closing`].

/// A fresh boundary that cannot occur in our own headers.
pub fn new_boundary() -> String {
    format!("----=_Part_{}", uuid::Uuid::new_v4().simple())
}

/// The HTTP Content-Type of a message whose root part has Content-ID `start`.
pub fn content_type(boundary: &str, start: &str) -> String {
    format!(
        r#"multipart/related; type="application/soap+xml"; boundary="{boundary}"; start="<{start}>"; start-info="application/soap+xml""#
    )
}

/// The delimiter and headers that open a part. `first` omits the leading CRLF.
pub fn part_head(boundary: &str, content_type: &str, content_id: &str, first: bool) -> String {
    let lead = if first { "" } else { "\r\n" };
    format!(
        "{lead}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: <{content_id}>\r\n\r\n"
    )
}

pub fn closing(boundary: &str) -> String {
    format!("\r\n--{boundary}--\r\n")
}

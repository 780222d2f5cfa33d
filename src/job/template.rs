//! `{{var}}` and `{{var | default: "x"}}` placeholders in title, body and subtitle.

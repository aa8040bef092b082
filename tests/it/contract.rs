//! The tutorial's wire contract is frozen: `proto/api.proto` must keep exactly
//! the package, service, methods, messages, field names, numbers and types that
//! clients generated from it rely on.

use prost_types::field_descriptor_proto::{Label, Type};

#[test]
fn the_tutorial_proto_is_unchanged() {
    let root = env!("CARGO_MANIFEST_DIR");
    let descriptors = protox::compile(["api.proto"], [format!("{root}/proto")])
        .expect("proto/api.proto compiles");
    let file = descriptors
        .file
        .iter()
        .find(|f| f.name() == "api.proto")
        .expect("api.proto in the descriptor set");

    assert_eq!(file.package(), "simplekeyvalue");
    assert_eq!(file.syntax(), "proto3");
    assert_eq!(
        file.options.as_ref().map(|o| o.go_package()),
        Some("/kvapi")
    );

    let services: Vec<_> = file.service.iter().map(|s| s.name()).collect();
    assert_eq!(services, ["KeyValue"]);
    let methods: Vec<_> = file.service[0]
        .method
        .iter()
        .map(|m| {
            (
                m.name(),
                m.input_type(),
                m.output_type(),
                m.client_streaming(),
                m.server_streaming(),
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            (
                "Set",
                ".simplekeyvalue.SetRequest",
                ".simplekeyvalue.SetReply",
                false,
                false
            ),
            (
                "Get",
                ".simplekeyvalue.GetRequest",
                ".simplekeyvalue.GetReply",
                false,
                false
            ),
        ]
    );

    let messages: Vec<(&str, Vec<(&str, i32)>)> = file
        .message_type
        .iter()
        .map(|m| {
            for field in &m.field {
                assert_eq!(
                    field.r#type(),
                    Type::String,
                    "{}.{}",
                    m.name(),
                    field.name()
                );
                assert_eq!(
                    field.label(),
                    Label::Optional,
                    "{}.{}",
                    m.name(),
                    field.name()
                );
                assert!(field.oneof_index.is_none() && !field.proto3_optional());
            }
            (
                m.name(),
                m.field.iter().map(|f| (f.name(), f.number())).collect(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            ("SetRequest", vec![("key", 1), ("value", 2)]),
            ("SetReply", vec![]),
            ("GetRequest", vec![("key", 1)]),
            ("GetReply", vec![("value", 1)]),
        ]
    );
}

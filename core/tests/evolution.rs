//! The schema-evolution rules of `docs/SERVICES.md`, one test each: which changes to an
//! endpoint keep its key (old and new peers still talk) and which change it (the server
//! refuses the other side's calls as a schema mismatch, never decoding them wrongly).
#![allow(missing_docs, dead_code)]

use serde::{Deserialize, Serialize};
use wirecall_core::typed::{Endpoint, EndpointKey, Schema};

/// The request of version 1 of an endpoint, and the changes the rules talk about.
mod v1 {
    use super::*;
    #[derive(Serialize, Deserialize, Schema)]
    pub(crate) struct Point {
        pub(crate) x: i32,
        pub(crate) y: i32,
    }
    #[derive(Serialize, Deserialize, Schema)]
    pub(crate) enum Error {
        Full,
    }
    wirecall_core::endpoints! {
        pub(crate) Move = "geo/move": Point => Point, Error;
    }
}

fn key<Req: Schema, Resp: Schema, Err: Schema>(path: &str) -> EndpointKey {
    EndpointKey::new::<Req, Resp, Err>(path)
}

fn v1_key() -> EndpointKey {
    v1::Move::KEY
}

/// Rule 1: the key depends only on the path and the types' schemas, so rebuilding with the
/// same types (another crate, another module, a renamed Rust item for the endpoint) keeps
/// it, and doc comments or derives that do not change the encoding do not matter.
#[test]
fn rule_1_the_same_types_keep_the_key() {
    mod rebuilt {
        use super::*;
        /// Documented now.
        #[derive(Serialize, Deserialize, Schema, Debug, Clone)]
        pub(crate) struct Point {
            /// Across.
            pub(crate) x: i32,
            /// Up.
            pub(crate) y: i32,
        }
        #[derive(Serialize, Deserialize, Schema, Debug)]
        pub(crate) enum Error {
            Full,
        }
        wirecall_core::endpoints! {
            pub(crate) RenamedMarker = "geo/move": Point => Point, Error;
        }
    }
    assert_eq!(rebuilt::RenamedMarker::KEY, v1_key());
}

/// Rule 2: changing a field's type changes the key.
#[test]
fn rule_2_a_field_type_change_breaks_the_key() {
    #[derive(Serialize, Deserialize, Schema)]
    struct Point {
        x: i64,
        y: i32,
    }
    assert_ne!(
        key::<Point, v1::Point, v1::Error>("geo/move").schema,
        v1_key().schema
    );
}

/// Rule 3: adding or removing a field changes the key (postcard has no optional fields:
/// the bytes of the other version would be misread).
#[test]
fn rule_3_adding_or_removing_a_field_breaks_the_key() {
    #[derive(Serialize, Deserialize, Schema)]
    struct Point {
        x: i32,
        y: i32,
        z: i32,
    }
    assert_ne!(
        key::<Point, v1::Point, v1::Error>("geo/move").schema,
        v1_key().schema
    );
    #[derive(Serialize, Deserialize, Schema)]
    struct Shorter {
        x: i32,
    }
    assert_ne!(
        key::<Shorter, v1::Point, v1::Error>("geo/move").schema,
        v1_key().schema
    );
}

/// Rule 4: renaming a field or reordering fields changes the key, even where the bytes
/// would happen to match: field names are part of the schema, so a change of
/// meaning cannot slip through as a change of name. A type's own name is not: renaming a
/// struct keeps the key.
#[test]
fn rule_4_field_names_and_order_are_part_of_the_key_type_names_are_not() {
    mod renamed_field {
        use super::*;
        #[derive(Serialize, Deserialize, Schema)]
        pub(crate) struct Point {
            pub(crate) x: i32,
            pub(crate) z: i32,
        }
    }
    mod renamed_type {
        use super::*;
        #[derive(Serialize, Deserialize, Schema)]
        pub(crate) struct Position {
            pub(crate) x: i32,
            pub(crate) y: i32,
        }
    }
    mod reordered {
        use super::*;
        #[derive(Serialize, Deserialize, Schema)]
        pub(crate) struct Point {
            pub(crate) y: i32,
            pub(crate) x: i32,
        }
    }
    let v1 = v1_key().schema;
    assert_ne!(
        key::<renamed_field::Point, v1::Point, v1::Error>("geo/move").schema,
        v1
    );
    assert_ne!(
        key::<reordered::Point, v1::Point, v1::Error>("geo/move").schema,
        v1
    );
    // A type's own name is not part of the key (postcard-schema hashes the shape and the
    // field and variant names, not the type names): renaming a type keeps it.
    assert_eq!(
        key::<renamed_type::Position, v1::Point, v1::Error>("geo/move").schema,
        v1
    );
}

/// Rule 5: the response and the error are part of the key as much as the request: a new
/// error variant changes it (an old client could not decode the new value).
#[test]
fn rule_5_a_new_error_variant_breaks_the_key() {
    #[derive(Serialize, Deserialize, Schema)]
    enum Error {
        Full,
        Forbidden,
    }
    assert_ne!(
        key::<v1::Point, v1::Point, Error>("geo/move").schema,
        v1_key().schema
    );
    assert_ne!(
        key::<v1::Point, (i32, i32), v1::Error>("geo/move").schema,
        v1_key().schema
    );
}

/// Rule 6: the path is the endpoint's identity: the same types at another path are another
/// endpoint, and adding an endpoint changes no other endpoint's key. So the way to change
/// an endpoint's types without breaking old clients is a new endpoint at a new path
/// (`geo/move2`, `geo/v2/move`), served next to the old one until no client calls it.
#[test]
fn rule_6_a_new_path_is_a_new_endpoint_and_leaves_the_others_alone() {
    wirecall_core::endpoints! {
        pub(crate) MoveV2 = "geo/v2/move": v1::Point => (i32, i32), v1::Error;
    }
    assert_ne!(MoveV2::KEY.path, v1_key().path);
    assert_eq!(
        v1::Move::KEY,
        v1_key(),
        "declaring another endpoint changed nothing"
    );
    let same_types_elsewhere = key::<v1::Point, v1::Point, v1::Error>("geo/jump");
    assert_ne!(same_types_elsewhere.path, v1_key().path);
    assert_ne!(same_types_elsewhere.schema, v1_key().schema);
}

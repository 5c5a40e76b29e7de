//! The few types of XLA's FFI C API (`xla/ffi/api/c_api.h`) that the JAX handlers use.
//!
//! There is no maintained crate for this header, so the structs are mirrored here by hand.
//! Their sizes and field offsets are checked against the header that ships with jaxlib
//! (`jax.ffi.include_dir()`) by `tests/test_jax_ffi_abi.py`, through [`layout`].
//!
//! Only what stayed the same from API version 0.1 (jaxlib 0.4.35) to today is used: the
//! handlers report version 0.1, which every jaxlib since accepts.

// The names and every field of the C header, whether or not the handlers read them.
#![allow(non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_void};

/// The FFI API version the handlers are written against (reported in their metadata).
pub(crate) const API_MAJOR: i32 = 0;
pub(crate) const API_MINOR: i32 = 1;

pub(crate) const EXTENSION_METADATA: i32 = 1;

pub(crate) const ERROR_INVALID_ARGUMENT: i32 = 3;
pub(crate) const ERROR_INTERNAL: i32 = 13;

pub(crate) const DTYPE_S32: i32 = 4;
pub(crate) const DTYPE_S64: i32 = 5;
pub(crate) const DTYPE_U32: i32 = 8;
pub(crate) const DTYPE_U64: i32 = 9;
pub(crate) const DTYPE_F32: i32 = 11;
pub(crate) const DTYPE_F64: i32 = 12;

pub(crate) const ATTR_SCALAR: i32 = 3;

#[repr(C)]
pub(crate) struct XLA_FFI_Extension_Base {
    pub struct_size: usize,
    pub type_: i32,
    pub next: *mut XLA_FFI_Extension_Base,
}

#[repr(C)]
pub(crate) struct XLA_FFI_Api_Version {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub major_version: i32,
    pub minor_version: i32,
}

/// Opaque: created by the API, owned by XLA once returned.
#[repr(C)]
pub(crate) struct XLA_FFI_Error {
    _private: [u8; 0],
}

#[repr(C)]
pub(crate) struct XLA_FFI_Error_Create_Args {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub message: *const c_char,
    pub errc: i32,
}

pub(crate) type XLA_FFI_Error_Create =
    unsafe extern "C" fn(args: *mut XLA_FFI_Error_Create_Args) -> *mut XLA_FFI_Error;

#[repr(C)]
pub(crate) struct XLA_FFI_Buffer {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub dtype: i32,
    pub data: *mut c_void,
    pub rank: i64,
    pub dims: *mut i64,
}

#[repr(C)]
pub(crate) struct XLA_FFI_ByteSpan {
    pub ptr: *const c_char,
    pub len: usize,
}

#[repr(C)]
pub(crate) struct XLA_FFI_Scalar {
    pub dtype: i32,
    pub value: *mut c_void,
}

#[repr(C)]
pub(crate) struct XLA_FFI_Args {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub size: i64,
    pub types: *mut i32,
    pub args: *mut *mut c_void,
}

#[repr(C)]
pub(crate) struct XLA_FFI_Rets {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub size: i64,
    pub types: *mut i32,
    pub rets: *mut *mut c_void,
}

#[repr(C)]
pub(crate) struct XLA_FFI_Attrs {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub size: i64,
    pub types: *mut i32,
    pub names: *mut *mut XLA_FFI_ByteSpan,
    pub attrs: *mut *mut c_void,
}

/// The head of `XLA_FFI_Api`: the function table goes on after `XLA_FFI_Error_Create`,
/// which is all the handlers call.
#[repr(C)]
pub(crate) struct XLA_FFI_Api {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub api_version: XLA_FFI_Api_Version,
    pub internal_api: *const c_void,
    pub error_create: Option<XLA_FFI_Error_Create>,
}

#[repr(C)]
pub(crate) struct XLA_FFI_CallFrame {
    pub struct_size: usize,
    pub extension_start: *mut XLA_FFI_Extension_Base,
    pub api: *const XLA_FFI_Api,
    pub ctx: *mut c_void,
    pub stage: i32,
    pub args: XLA_FFI_Args,
    pub rets: XLA_FFI_Rets,
    pub attrs: XLA_FFI_Attrs,
}

/// Version 0.1's metadata: `state_type_id` (added later) is written only when the caller's
/// `struct_size` says the field is there.
#[repr(C)]
pub(crate) struct XLA_FFI_Metadata {
    pub struct_size: usize,
    pub api_version: XLA_FFI_Api_Version,
    pub traits: u32,
}

#[repr(C)]
pub(crate) struct XLA_FFI_Metadata_Extension {
    pub extension_base: XLA_FFI_Extension_Base,
    pub metadata: *mut XLA_FFI_Metadata,
}

pub(crate) type XLA_FFI_Handler =
    unsafe extern "C" fn(call_frame: *mut XLA_FFI_CallFrame) -> *mut XLA_FFI_Error;

/// One mirrored struct: its name, size and `(field, offset)` pairs.
pub(crate) type StructLayout = (&'static str, usize, Vec<(&'static str, usize)>);

/// `(name, sizeof, [(field, offsetof)])` of every mirrored struct, for the test that
/// compares them with the C header.
pub(crate) fn layout() -> Vec<StructLayout> {
    use std::mem::{offset_of, size_of};
    macro_rules! entry {
        ($t:ident, $($f:ident => $cf:literal),*) => {
            (stringify!($t), size_of::<$t>(), vec![$(($cf, offset_of!($t, $f))),*])
        };
    }
    vec![
        entry!(XLA_FFI_Extension_Base, struct_size => "struct_size", type_ => "type", next => "next"),
        entry!(XLA_FFI_Api_Version, struct_size => "struct_size",
            extension_start => "extension_start", major_version => "major_version",
            minor_version => "minor_version"),
        entry!(XLA_FFI_Error_Create_Args, struct_size => "struct_size",
            extension_start => "extension_start", message => "message", errc => "errc"),
        entry!(XLA_FFI_Buffer, struct_size => "struct_size", extension_start => "extension_start",
            dtype => "dtype", data => "data", rank => "rank", dims => "dims"),
        entry!(XLA_FFI_ByteSpan, ptr => "ptr", len => "len"),
        entry!(XLA_FFI_Scalar, dtype => "dtype", value => "value"),
        entry!(XLA_FFI_Args, struct_size => "struct_size", extension_start => "extension_start",
            size => "size", types => "types", args => "args"),
        entry!(XLA_FFI_Rets, struct_size => "struct_size", extension_start => "extension_start",
            size => "size", types => "types", rets => "rets"),
        entry!(XLA_FFI_Attrs, struct_size => "struct_size", extension_start => "extension_start",
            size => "size", types => "types", names => "names", attrs => "attrs"),
        entry!(XLA_FFI_CallFrame, struct_size => "struct_size",
            extension_start => "extension_start", api => "api", ctx => "ctx", stage => "stage",
            args => "args", rets => "rets", attrs => "attrs"),
        entry!(XLA_FFI_Metadata, struct_size => "struct_size", api_version => "api_version",
            traits => "traits"),
        entry!(XLA_FFI_Metadata_Extension, extension_base => "extension_base",
            metadata => "metadata"),
    ]
}

/// Offsets in `XLA_FFI_Api` of the fields read through the truncated mirror.
pub(crate) fn api_offsets() -> Vec<(&'static str, usize)> {
    use std::mem::offset_of;
    vec![
        ("struct_size", offset_of!(XLA_FFI_Api, struct_size)),
        ("api_version", offset_of!(XLA_FFI_Api, api_version)),
        ("internal_api", offset_of!(XLA_FFI_Api, internal_api)),
        (
            "XLA_FFI_Error_Create",
            offset_of!(XLA_FFI_Api, error_create),
        ),
    ]
}

//! The one FFI edge of the gateway: acquiring GSSAPI credentials from a named keytab or ticket
//! cache with MIT's `gss_acquire_cred_from` (a credential store), which the safe `libgssapi`
//! binding does not wrap. Everything else (contexts, names, tokens) goes through `libgssapi`.
//!
//! Why not the environment (`KRB5_KTNAME`): each gateway names its own keytab in its
//! configuration, several gateways run in one test process, and changing the environment of a
//! running multi-threaded process is unsound. A credential store names the file per credential.
#![allow(unsafe_code)]

use libgssapi::credential::Cred;
use libgssapi::error::{Error as GssError, MajorFlags};
use libgssapi_sys as sys;
use std::ffi::{CString, c_void};
use std::path::Path;
use std::ptr;

/// `GSS_KRB5_NT_PRINCIPAL_NAME`, 1.2.840.113554.1.2.2.1: a name such as `HTTP/host@REALM`.
static KRB5_NT_PRINCIPAL: [u8; 10] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02, 0x01];

/// Where credentials come from.
#[derive(Debug, Clone, Copy)]
pub enum Store<'a> {
    /// Acceptor credentials: the service keys in a keytab file.
    Keytab(&'a Path),
    /// Initiator credentials: tickets in a ticket-cache file (what `kinit -c FILE` wrote).
    TicketCache(&'a Path),
}

/// Why credentials could not be acquired.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("the path or principal contains a NUL byte")]
    Nul,
    #[error("invalid principal name {0:?}: {1}")]
    Name(String, GssError),
    #[error("{0}")]
    Gss(GssError),
}

fn failed(major: u32) -> bool {
    // Calling and routine errors; supplementary bits alone are not failures.
    major & 0xffff_0000 != 0
}

/// Acquires credentials for `principal` (None: any principal the store holds, which for a
/// keytab means "accept for every service key in it", as Hadoop's `principal = *` does).
pub fn acquire(principal: Option<&str>, store: Store<'_>) -> Result<Cred, AcquireError> {
    let (key, path, usage) = match store {
        Store::Keytab(p) => ("keytab", p, sys::GSS_C_ACCEPT),
        Store::TicketCache(p) => ("ccache", p, sys::GSS_C_INITIATE),
    };
    let key = CString::new(key).map_err(|_| AcquireError::Nul)?;
    let value = CString::new(format!("FILE:{}", path.display())).map_err(|_| AcquireError::Nul)?;
    let mut elements = [sys::gss_key_value_element_desc {
        key: key.as_ptr(),
        value: value.as_ptr(),
    }];
    let set = sys::gss_key_value_set_desc {
        count: 1,
        elements: elements.as_mut_ptr(),
    };
    let mut minor: sys::OM_uint32 = 0;
    let mut name: sys::gss_name_t = ptr::null_mut();
    if let Some(p) = principal {
        if p.contains('\0') {
            return Err(AcquireError::Nul);
        }
        let mut oid = sys::gss_OID_desc {
            length: KRB5_NT_PRINCIPAL.len() as sys::OM_uint32,
            elements: KRB5_NT_PRINCIPAL.as_ptr() as *mut c_void,
        };
        let mut buf = sys::gss_buffer_desc {
            length: p.len(),
            value: p.as_ptr() as *mut c_void,
        };
        // SAFETY: `buf` points at `p`'s bytes for the duration of the call and the library
        // copies them; `oid` points at a static array the library only reads; `name` is an
        // out-parameter released below (or owned by nobody if the call failed).
        let major = unsafe { sys::gss_import_name(&mut minor, &mut buf, &mut oid, &mut name) };
        if failed(major) {
            return Err(AcquireError::Name(
                p.to_owned(),
                GssError {
                    major: MajorFlags::from_bits_retain(major),
                    minor,
                },
            ));
        }
    }
    let mut cred: sys::gss_cred_id_t = ptr::null_mut();
    // SAFETY: `name` is null or the name imported above; `set` and the C strings it points to
    // outlive the call, which only reads them; `cred` is an out-parameter whose ownership passes
    // to `Cred` below on success. Null actual-mechs and time pointers are allowed by RFC 5588.
    let major = unsafe {
        sys::gss_acquire_cred_from(
            &mut minor,
            name,
            sys::_GSS_C_INDEFINITE,
            ptr::null_mut(),
            usage as sys::gss_cred_usage_t,
            &set,
            &mut cred,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if !name.is_null() {
        let mut m2: sys::OM_uint32 = 0;
        // SAFETY: `name` came from gss_import_name above and is released exactly once.
        unsafe { sys::gss_release_name(&mut m2, &mut name) };
    }
    if failed(major) {
        return Err(AcquireError::Gss(GssError {
            major: MajorFlags::from_bits_retain(major),
            minor,
        }));
    }
    // SAFETY: the call succeeded, so `cred` is a fresh credential handle that nothing else
    // owns; `Cred` releases it once, when its last clone drops.
    Ok(unsafe { Cred::from_c(cred) })
}

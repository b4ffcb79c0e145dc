//! Field offsets in the running kernel's structures, read from its BTF
//! (/sys/kernel/btf/vmlinux): the socket iterator reads TCP sockets with
//! bpf_probe_read_kernel at these offsets, so it needs no CO-RE support
//! in the BPF toolchain and follows whatever layout this kernel has.
use anyhow::{Context as _, Result, bail};

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// The referred type (typedefs, modifiers).
    ty: u32,
    members: Vec<Member>,
}

pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")
            .context("reading /sys/kernel/btf/vmlinux (a kernel with BTF is needed)")?;
        Btf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf> {
        let u16_at = |o: usize| -> Result<u16> {
            Ok(u16::from_le_bytes(
                data.get(o..o + 2).context("BTF truncated")?.try_into()?,
            ))
        };
        let u32_at = |o: usize| -> Result<u32> {
            Ok(u32::from_le_bytes(
                data.get(o..o + 4).context("BTF truncated")?.try_into()?,
            ))
        };
        if u16_at(0)? != 0xeb9f {
            bail!("not little-endian BTF");
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .context("BTF strings truncated")?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            ty: 0,
            members: Vec::new(),
        }];
        let (mut at, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
        while at < end {
            let (name, info, size_or_type) = (u32_at(at)?, u32_at(at + 4)?, u32_at(at + 8)?);
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl_tag
                3 => 12,          // array
                KIND_STRUCT | KIND_UNION => {
                    for m in 0..vlen {
                        let o = at + 12 * m;
                        let offset = u32_at(o + 8)?;
                        members.push(Member {
                            name: u32_at(o)?,
                            ty: u32_at(o + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    12 * vlen
                }
                6 | 13 => 8 * vlen,   // enum, func_proto
                15 | 19 => 12 * vlen, // datasec, enum64
                _ => 0,               // ptr, fwd, typedef, modifiers, func, float, type_tag
            };
            at += extra;
            types.push(Type {
                name,
                kind,
                ty: size_or_type,
                members,
            });
        }
        Ok(Btf { types, strings })
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// The struct or union named `name`.
    fn composite(&self, name: &str) -> Result<u32> {
        self.types
            .iter()
            .position(|t| {
                (t.kind == KIND_STRUCT || t.kind == KIND_UNION) && self.name(t.name) == name
            })
            .map(|i| i as u32)
            .with_context(|| format!("no struct {name} in the kernel's BTF"))
    }

    /// Through typedefs and const/volatile to the type itself.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            let Some(t) = self.types.get(id as usize) else {
                break;
            };
            if matches!(
                t.kind,
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
            ) {
                id = t.ty;
            } else {
                break;
            }
        }
        id
    }

    /// Byte offset of `field` in struct `ty`, looking into anonymous
    /// members (the unions of `sock_common`).
    fn find(&self, ty: u32, field: &str) -> Option<u32> {
        let t = self.types.get(self.resolve(ty) as usize)?;
        for m in &t.members {
            let name = self.name(m.name);
            if name == field {
                return Some(m.bit_offset / 8);
            }
            if name.is_empty()
                && let Some(inner) = self.find(m.ty, field)
            {
                return Some(m.bit_offset / 8 + inner);
            }
        }
        None
    }

    /// Offset of a dotted path ("icsk_inet.sk.__sk_common.skc_state") from
    /// the start of struct `root`.
    pub fn offset(&self, root: &str, path: &str) -> Result<u32> {
        let mut ty = self.composite(root)?;
        let mut total = 0;
        for field in path.split('.') {
            let t = self
                .types
                .get(self.resolve(ty) as usize)
                .context("type id")?;
            let found = t
                .members
                .iter()
                .find(|m| self.name(m.name) == field)
                .map(|m| (m.bit_offset / 8, m.ty));
            let (off, next) = match found {
                Some(f) => f,
                None => {
                    let off = self
                        .find(ty, field)
                        .with_context(|| format!("{root}: no field {field} in {path}"))?;
                    // Anonymous members: find the member's own type again.
                    let next = self.member_type(ty, field).context("member type")?;
                    (off, next)
                }
            };
            total += off;
            ty = next;
        }
        Ok(total)
    }

    fn member_type(&self, ty: u32, field: &str) -> Option<u32> {
        let t = self.types.get(self.resolve(ty) as usize)?;
        for m in &t.members {
            let name = self.name(m.name);
            if name == field {
                return Some(m.ty);
            }
            if name.is_empty()
                && let Some(inner) = self.member_type(m.ty, field)
            {
                return Some(inner);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernels_tcp_sock_fields_are_found_where_they_must_be() {
        let Ok(btf) = Btf::from_sys_fs() else {
            panic!("no kernel BTF: the socket iterator cannot run here");
        };
        // sock_common opens with the address pair: daddr, then rcv_saddr.
        assert_eq!(btf.offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(btf.offset("sock_common", "skc_rcv_saddr").unwrap(), 4);
        let state = btf
            .offset("tcp_sock", "inet_conn.icsk_inet.sk.__sk_common.skc_state")
            .unwrap();
        assert_eq!(
            state,
            btf.offset("sock_common", "skc_state").unwrap(),
            "sock_common is at the start of tcp_sock"
        );
        let una = btf.offset("tcp_sock", "snd_una").unwrap();
        let nxt = btf.offset("tcp_sock", "rcv_nxt").unwrap();
        let backoff = btf.offset("tcp_sock", "inet_conn.icsk_backoff").unwrap();
        assert!(una > backoff && nxt > backoff, "{una} {nxt} {backoff}");
    }
}

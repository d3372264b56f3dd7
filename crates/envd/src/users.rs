//! Resolving capsule users from `/etc/passwd` and `/etc/group`.
//!
//! envd is linked statically, and a static glibc's getpwnam/getgrouplist load
//! NSS modules (e.g. `libnss_systemd`) at run time, which crashes. A capsule's
//! accounts live in these two files, so they are read directly.

use nix::unistd::{Gid, Uid};
use std::path::{Path, PathBuf};

const PASSWD: &str = "/etc/passwd";
const GROUP: &str = "/etc/group";

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user '{0}' does not exist")]
    Unknown(String),
    #[error("looking up user '{0}': {1}")]
    Lookup(String, std::io::Error),
}

/// A resolved account: everything needed to run a process as it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    pub groups: Vec<Gid>,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// One parsed `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
    shell: String,
}

fn parse_passwd_line(line: &str) -> Option<PasswdEntry> {
    let mut f = line.split(':');
    let name = f.next()?.to_owned();
    let _password = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    let _gecos = f.next()?;
    let home = f.next()?.to_owned();
    let shell = f.next().unwrap_or("").to_owned();
    (!name.is_empty() && !name.starts_with('#')).then_some(PasswdEntry {
        name,
        uid,
        gid,
        home,
        shell,
    })
}

/// One parsed `/etc/group` line: name, gid, members.
fn parse_group_line(line: &str) -> Option<(&str, u32, impl Iterator<Item = &str>)> {
    let mut f = line.split(':');
    let name = f.next()?;
    let _password = f.next()?;
    let gid = f.next()?.parse().ok()?;
    let members = f.next().unwrap_or("").split(',').filter(|m| !m.is_empty());
    (!name.is_empty() && !name.starts_with('#')).then_some((name, gid, members))
}

fn read_db(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        // A missing group file just means no supplementary groups.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        other => other,
    }
}

fn find_passwd(pred: impl Fn(&PasswdEntry) -> bool) -> std::io::Result<Option<PasswdEntry>> {
    Ok(read_db(Path::new(PASSWD))?
        .lines()
        .filter_map(parse_passwd_line)
        .find(|e| pred(e)))
}

/// The primary gid plus every group listing `name` as a member, in file order.
fn groups_of(name: &str, primary: u32, group_db: &str) -> Vec<Gid> {
    let mut out = vec![Gid::from_raw(primary)];
    for (_, gid, mut members) in group_db.lines().filter_map(parse_group_line) {
        if gid != primary && members.any(|m| m == name) && !out.contains(&Gid::from_raw(gid)) {
            out.push(Gid::from_raw(gid));
        }
    }
    out
}

impl Account {
    pub fn lookup(name: &str) -> Result<Self, UserError> {
        let lookup_err = |e| UserError::Lookup(name.to_owned(), e);
        let entry = find_passwd(|e| e.name == name)
            .map_err(lookup_err)?
            .ok_or_else(|| UserError::Unknown(name.to_owned()))?;
        let group_db = read_db(Path::new(GROUP)).map_err(lookup_err)?;
        Ok(Self {
            groups: groups_of(&entry.name, entry.gid, &group_db),
            uid: Uid::from_raw(entry.uid),
            gid: Gid::from_raw(entry.gid),
            home: PathBuf::from(entry.home),
            shell: PathBuf::from(entry.shell),
            name: entry.name,
        })
    }

    /// The account name owning `uid`, if `/etc/passwd` has one.
    pub fn name_of(uid: Uid) -> Option<String> {
        find_passwd(|e| e.uid == uid.as_raw())
            .ok()
            .flatten()
            .map(|e| e.name)
    }

    /// The name of a group, or its numeric id.
    pub fn group_name(gid: Gid) -> String {
        read_db(Path::new(GROUP))
            .ok()
            .and_then(|db| {
                db.lines()
                    .filter_map(parse_group_line)
                    .find(|(_, g, _)| *g == gid.as_raw())
                    .map(|(n, _, _)| n.to_owned())
            })
            .unwrap_or_else(|| gid.to_string())
    }

    /// The name of a user, or its numeric id.
    pub fn user_name(uid: Uid) -> String {
        Self::name_of(uid).unwrap_or_else(|| uid.to_string())
    }

    /// Whether this process can switch to the account (root, or already it).
    pub fn is_current_or_switchable(&self) -> bool {
        let me = Uid::effective();
        me.is_root() || me == self.uid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_lines() {
        let e = parse_passwd_line("user:x:1000:1000:User,,,:/home/user:/bin/bash").unwrap();
        assert_eq!(
            e,
            PasswdEntry {
                name: "user".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/user".into(),
                shell: "/bin/bash".into()
            }
        );
        assert!(parse_passwd_line("bad:x:notanumber:1::/:").is_none());
        assert!(parse_passwd_line("").is_none());
        assert!(parse_passwd_line("# comment:x:1:1::/:").is_none());
    }

    #[test]
    fn supplementary_groups_come_from_member_lists() {
        let db =
            "root:x:0:\nsudo:x:27:user,other\nuser:x:1000:\ndocker:x:999:other\nadm:x:4:user\n";
        let groups: Vec<u32> = groups_of("user", 1000, db)
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        assert_eq!(groups, vec![1000, 27, 4]);
    }

    #[test]
    fn root_resolves_from_the_real_files() {
        let root = Account::lookup("root").unwrap();
        assert_eq!(root.uid.as_raw(), 0);
        assert!(matches!(
            Account::lookup("no-such-user-wrenn"),
            Err(UserError::Unknown(_))
        ));
    }
}

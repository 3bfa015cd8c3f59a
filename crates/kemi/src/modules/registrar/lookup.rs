//! `lookup`, `lookup_uri`, `lookup_branches`, `registered`,
//! `registered_uri` and `unregister`: reading an AOR's bindings back and
//! routing the request to them.

use kemibox_sip::{NameAddr, Uri};
use kemibox_store::Binding;

use super::serial::set_ruri_q;
use super::{aor_of, instance_urn, q_text, unix_now};
use crate::{AppendedBranch, Ctx, Level};

/// Why no bindings could be read for a URI.
enum Missing {
    /// The URI names no AOR (logged when the script passed it).
    BadUri,
    /// The location store failed (logged).
    Store,
}

/// Where a request for `b` is sent: the first Path entry (RFC 3327: the
/// proxy nearest the UA, which handles its NAT), else the address the
/// REGISTER came from when it was not the Contact's, else the Contact
/// itself (`None`).
fn destination(b: &Binding) -> Option<String> {
    match b.path.first() {
        Some(first) => NameAddr::parse(first).ok().map(|na| na.uri.to_string()),
        None => b.received.clone(),
    }
}

/// `b` as a branch for `t_relay`.
fn branch_of(b: &Binding) -> AppendedBranch {
    AppendedBranch {
        uri: b.contact.clone(),
        dst_uri: destination(b),
        q: b.q.map(q_text),
        path: b.path.clone(),
    }
}

impl Ctx {
    /// The unexpired bindings of the AOR of `target` in `table`, best
    /// first. A `gr` parameter (a public GRUU, RFC 5627) narrows them to
    /// the newest binding of that instance; a `gr` without a value (a
    /// temporary GRUU, which kemibox never issues) matches none.
    async fn bindings_for(
        &mut self,
        function: &str,
        table: &str,
        target: &str,
        from_script: bool,
    ) -> Result<Vec<Binding>, Missing> {
        let parsed = Uri::parse(target).ok();
        let Some((aor, gr)) = parsed
            .as_ref()
            .and_then(|u| Some((aor_of(u)?, u.param("gr"))))
        else {
            if from_script {
                self.script_error(function, format!("no AOR in {target:?}"));
            }
            return Err(Missing::BadUri);
        };
        let gr = gr.map(|g| g.map(str::to_string));
        let store = self.services.location.clone();
        let mut bindings = match store
            .lookup(self.tenant.as_str(), table, &aor, unix_now())
            .await
        {
            Ok(b) => b,
            Err(e) => {
                self.log(
                    Level::Err,
                    &format!("{function}: location store failed for {aor} in table {table}: {e}"),
                );
                return Err(Missing::Store);
            }
        };
        match gr {
            None => {}
            Some(None) => bindings.clear(),
            Some(Some(urn)) => {
                let newest = bindings
                    .into_iter()
                    .filter(|b| {
                        b.instance
                            .as_deref()
                            .is_some_and(|i| instance_urn(i).eq_ignore_ascii_case(&urn))
                    })
                    .max_by_key(|b| b.updated);
                bindings = newest.into_iter().collect();
            }
        }
        Ok(bindings)
    }

    /// Route the request to `bindings` (best first, not empty): the first
    /// becomes the R-URI with its destination and Path, the others
    /// appended branches in order (as many as fit). 1, or -3 when a
    /// stored contact is not a usable URI.
    fn route_to(&mut self, function: &str, bindings: Vec<Binding>) -> i32 {
        let mut bindings = bindings.into_iter();
        let Some(best) = bindings.next() else {
            return -1;
        };
        if !self.set_ruri(function, best.contact.clone()) {
            return -3;
        }
        let dst = destination(&best);
        if self.message.as_ref().is_some_and(|m| m.dst_uri != dst) {
            self.set_dst_uri(function, dst);
        }
        if let Some(m) = self.message.as_mut() {
            m.path = best.path.clone();
            set_ruri_q(m, best.q);
        }
        for b in bindings {
            if self.append(branch_of(&b)) < 0 {
                break;
            }
        }
        1
    }

    /// `lookup` (the R-URI's AOR) and `lookup_uri` (`uri`'s AOR).
    pub(super) async fn registrar_lookup(
        &mut self,
        function: &str,
        table: String,
        uri: Option<String>,
    ) -> i32 {
        let Some(m) = self.message.as_ref().filter(|m| m.sip.is_request()) else {
            return -1;
        };
        let from_script = uri.is_some();
        let Some(target) = uri.or_else(|| m.ruri()) else {
            return -1;
        };
        match self
            .bindings_for(function, &table, &target, from_script)
            .await
        {
            Ok(b) if b.is_empty() => -1,
            Ok(b) => self.route_to(function, b),
            Err(Missing::BadUri) => -1,
            Err(Missing::Store) => -3,
        }
    }

    /// `lookup_branches`: the R-URI and each appended branch looked up in
    /// turn; what is found replaces it, what is not stays as it was.
    pub(super) async fn registrar_lookup_branches(&mut self, table: String) -> i32 {
        const FUNCTION: &str = "KSR.registrar.lookup_branches";
        let Some(m) = self.message.as_mut().filter(|m| m.sip.is_request()) else {
            return -1;
        };
        let originals = std::mem::take(&mut m.branches);
        let mut found = false;
        if let Some(ruri) = m.ruri()
            && let Ok(b) = self.bindings_for(FUNCTION, &table, &ruri, false).await
            && !b.is_empty()
        {
            found |= self.route_to(FUNCTION, b) == 1;
        }
        for branch in originals {
            match self
                .bindings_for(FUNCTION, &table, &branch.uri, false)
                .await
            {
                Ok(b) if !b.is_empty() => {
                    found = true;
                    for b in &b {
                        self.append(branch_of(b));
                    }
                }
                _ => {
                    self.append(branch);
                }
            }
        }
        super::super::kemi(found)
    }

    /// `registered` (the R-URI's AOR) and `registered_uri` (`uri`'s).
    pub(super) async fn registrar_registered(
        &mut self,
        function: &str,
        table: String,
        uri: Option<String>,
    ) -> i32 {
        let from_script = uri.is_some();
        let Some(target) = uri.or_else(|| self.message.as_ref()?.ruri()) else {
            return -1;
        };
        let found = self
            .bindings_for(function, &table, &target, from_script)
            .await
            .is_ok_and(|b| !b.is_empty());
        super::super::kemi(found)
    }

    /// `unregister`: every binding of `uri`'s AOR removed.
    pub(super) async fn registrar_unregister(&mut self, table: String, uri: String) -> i32 {
        const FUNCTION: &str = "KSR.registrar.unregister";
        let Some(aor) = Uri::parse(&uri).ok().as_ref().and_then(aor_of) else {
            self.script_error(FUNCTION, format!("no AOR in {uri:?}"));
            return -1;
        };
        let store = self.services.location.clone();
        match store.remove_aor(self.tenant.as_str(), &table, &aor).await {
            Ok(n) => super::super::kemi(n > 0),
            Err(e) => {
                self.log(
                    Level::Err,
                    &format!("{FUNCTION}: location store failed for {aor} in table {table}: {e}"),
                );
                -1
            }
        }
    }
}

//! `kemibox api`: the KSR functions, from the table generated from `wit/`.

pub fn run(markdown: bool) {
    if markdown {
        print!("{}", kemibox_kemi::api::markdown());
    } else {
        print!("{}", kemibox_kemi::api::listing());
    }
}

use wasmpipe_sdk::prelude::*;

#[map]
fn identity<T: Serialize>(ev: T) -> T {
    ev
}

mod with_impl_trait {
    use wasmpipe_sdk::prelude::*;

    #[filter]
    fn any(ev: &impl std::fmt::Debug) -> bool {
        true
    }
}

fn main() {}

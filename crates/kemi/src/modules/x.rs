//! `KSR.x`: ending the route. The guest unwinds the Lua stack after these
//! return; the host records why the invocation ended.

use crate::bindings::kemibox::ksr::x::Host;
use crate::{Ctx, Event};

impl Host for Ctx {
    async fn exit(&mut self) {
        self.exited = true;
        self.events.push(Event::Exit);
    }

    async fn drop(&mut self) {
        self.exited = true;
        if let Some(m) = self.message.as_mut() {
            m.drop = true;
        }
        self.events.push(Event::Drop);
    }
}

-- Dispatcher + dialog benchmark script: one file, run unchanged by
-- Kamailio 5.6 (app_lua, see kamailio-dispatcher.cfg) and by kemibox
-- (kemibox.toml).
--
-- An initial INVITE is tracked as a dialog (dlg_manage), counted in the
-- dialog profile "calls" (a profile without value), record-routed and sent
-- to a destination of set 1 chosen round robin (ds_select_dst(1, 4)). If
-- that destination does not answer (no reply within 2 s) or answers 5xx,
-- the failure route tries the next one of the selection (ds_next_dst).
-- ACK and BYE follow the route set (loose_route); the BYE ends the dialog
-- and so leaves the profile. OPTIONS outside a dialog are answered here
-- (the readiness probe of run.sh); other requests are refused.
--
-- What the proxy needs: set 1 in its dispatcher list (dispatcher.list),
-- the dialog profile "calls" without value, no probing.

local SET = 1   -- destination set in dispatcher.list
local ALG = 4   -- round robin

-- Relay statefully; a relay that cannot be sent gets tm's error reply.
local function relay()
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_reply_error()
    end
end

-- In-dialog requests: ACK and BYE of calls this proxy record-routed.
local function within_dialog()
    if KSR.rr.loose_route() > 0 then
        if KSR.is_BYE() and KSR.dialog.is_known_dlg() < 0 then
            KSR.warn("BYE of an unknown dialog: " .. KSR.kx.get_callid() .. "\n")
        end
        relay()
        return
    end
    if KSR.is_ACK() then
        -- ACK of a negative reply: tm absorbs it; any other is dropped.
        if KSR.tm.t_check_trans() > 0 then
            relay()
        end
        return
    end
    KSR.sl.sl_send_reply(404, "Not here")
end

function ksr_request_route()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        return 1
    end
    if KSR.siputils.has_totag() > 0 then
        within_dialog()
        return 1
    end
    if KSR.is_OPTIONS() then
        KSR.sl.sl_send_reply(200, "Keepalive")
        return 1
    end
    if KSR.is_CANCEL() then
        if KSR.tm.t_check_trans() > 0 then
            relay()
        end
        return 1
    end
    -- A retransmission of an INVITE in progress is absorbed by tm.
    if KSR.tm.t_check_trans() == 0 then
        return 1
    end
    if not KSR.is_INVITE() then
        KSR.sl.sl_send_reply(405, "Method Not Allowed")
        return 1
    end

    KSR.dialog.dlg_manage()
    KSR.dialog.set_dlg_profile_static("calls")
    KSR.rr.record_route()
    if KSR.dispatcher.ds_select_dst(SET, ALG) < 0 then
        KSR.sl.send_reply(503, "No Destination")
        return 1
    end
    -- 2 s for a first reply from a destination (then the failure route
    -- takes the next), 30 s for the final reply after a 1xx.
    KSR.tm.t_set_fr(30000, 2000)
    KSR.tm.t_on_failure("ksr_failure_dispatch")
    relay()
    return 1
end

-- The selected destination failed: take the next one of the selection,
-- unless the caller cancelled.
function ksr_failure_dispatch()
    if KSR.tm.t_is_canceled() > 0 then
        return 1
    end
    if KSR.tm.t_check_status("5[0-9][0-9]") > 0 or KSR.tm.t_branch_timeout() > 0 then
        if KSR.dispatcher.ds_next_dst() > 0 then
            KSR.tm.t_on_failure("ksr_failure_dispatch")
            relay()
        end
    end
    return 1
end

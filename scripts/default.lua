-- kemibox's embedded default routing script: a small stateful proxy in the
-- style of Kamailio's basic KEMI example. `kemibox run` uses it when no
-- script is given. (The registrar and digest authentication arrive with the
-- registrar work; until then requests are relayed to their R-URI.)

-- Flags, as in Kamailio's example configuration.
local FLT_ACC = 1

-- Initial checks: loops and malformed requests.
local function ksr_route_reqinit()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        KSR.x.exit()
    end
end

-- Relay statefully, with the transaction callbacks armed.
local function ksr_route_relay()
    if KSR.is_method_in("IBSU") then
        KSR.tm.t_on_branch("ksr_branch_manage")
    end
    if KSR.is_method_in("ISU") then
        KSR.tm.t_on_reply("ksr_onreply_manage")
    end
    if KSR.is_INVITE() then
        KSR.tm.t_on_failure("ksr_failure_manage")
    end
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_reply_error()
    end
    KSR.x.exit()
end

-- Requests inside a dialog follow their Route set.
local function ksr_route_withindlg()
    if KSR.siputils.has_totag() < 0 then
        return
    end
    if KSR.rr.loose_route() > 0 then
        ksr_route_relay()
        return
    end
    if KSR.is_ACK() then
        -- ACK without a Route: absorbed, or relayed if it matches a transaction.
        if KSR.tm.t_check_trans() > 0 then
            ksr_route_relay()
        end
        KSR.x.exit()
    end
    KSR.sl.sl_send_reply(404, "Not here")
    KSR.x.exit()
end

function ksr_request_route()
    ksr_route_reqinit()

    if KSR.is_OPTIONS() and KSR.is_myself_ruri() then
        KSR.sl.sl_send_reply(200, "Keepalive")
        KSR.x.exit()
    end

    if KSR.is_CANCEL() then
        if KSR.tm.t_check_trans() > 0 then
            ksr_route_relay()
        end
        return
    end

    ksr_route_withindlg()

    -- Retransmissions of a request in progress are absorbed here.
    if KSR.tm.t_check_trans() == 0 then
        return
    end

    if KSR.is_method_in("IS") then
        KSR.rr.record_route()
    end
    if KSR.is_INVITE() then
        KSR.setflag(FLT_ACC)
    end

    if KSR.is_myself_ruri() then
        KSR.sl.sl_send_reply(404, "Not Found")
        KSR.x.exit()
    end

    ksr_route_relay()
end

function ksr_branch_manage()
    KSR.dbg("new branch [" .. KSR.pv.get("$T_branch_idx") .. "] to " .. KSR.pv.get("$ru") .. "\n")
end

function ksr_onreply_manage()
    KSR.dbg("incoming reply " .. KSR.pv.getw("$rs") .. "\n")
end

function ksr_failure_manage()
    if KSR.tm.t_is_canceled() > 0 then
        return
    end
end

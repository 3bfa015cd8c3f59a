-- kemibox's reference script: a registrar and authenticating proxy laid out
-- as Kamailio's basic KEMI example is (request checks, NAT detection,
-- in-dialog requests, authentication, registrations, user location, one
-- relay function and the transaction routes), calling the same KSR
-- functions, so a script grown from that example runs here unchanged.
--
-- What it needs from the tenant's configuration:
--   [[htable]] name = "ipban" (a ban list; autoexpire bans, dbtable keeps
--   them across restarts), [pike] settings, the permissions address table
--   (group 1: trusted peers that skip authentication), acc flags 1/2/3, and
--   defines = ["WITH_AUTH", "WITH_NAT"] to switch those parts on.

-- Flags, as the example numbers them.
FLT_ACC = 1
FLT_ACCMISSED = 2
FLT_ACCFAILED = 3
FLT_NATS = 5
FLB_NATB = 6
FLB_NATSIPPING = 7

-- User-Agents of SIP scanners: their source is banned at once.
local SCANNERS = { "friendly-scanner", "sipcli", "sipvicious", "VaxSIPUserAgent" }

function ksr_request_route()
    route_reqinit()
    route_natdetect()

    if KSR.is_CANCEL() then
        if KSR.tm.t_check_trans() > 0 then
            route_relay()
        end
        return 1
    end

    route_withindlg()

    -- Retransmissions of a request the proxy already handles.
    if KSR.tmx.t_precheck_trans() > 0 then
        KSR.tm.t_check_trans()
        return 1
    end
    if KSR.tm.t_check_trans() == 0 then
        return 1
    end

    route_auth()

    -- Preloaded routes are removed; dialog-forming requests are
    -- record-routed.
    KSR.hdr.remove("Route")
    if KSR.is_method_in("IS") then
        KSR.rr.record_route()
    end

    if KSR.is_INVITE() then
        KSR.setflag(FLT_ACC)
    end

    route_sipout()
    route_registrar()

    if KSR.corex.has_ruri_user() < 0 then
        KSR.sl.sl_send_reply(484, "Address Incomplete")
        return 1
    end

    route_location()
    return 1
end

-- Relay statefully, arming the transaction routes once.
function route_relay()
    if KSR.is_method_in("IBSU") and KSR.tm.t_is_set("branch_route") < 0 then
        KSR.tm.t_on_branch("branch_manage")
    end
    if KSR.is_method_in("ISU") and KSR.tm.t_is_set("onreply_route") < 0 then
        KSR.tm.t_on_reply("onreply_manage")
    end
    if KSR.is_INVITE() and KSR.tm.t_is_set("failure_route") < 0 then
        KSR.tm.t_on_failure("failure_manage")
    end
    if KSR.tm.t_relay() < 0 then
        KSR.sl.sl_reply_error()
    end
    KSR.x.exit()
end

-- Checks every request passes first: bans, flood detection, scanners,
-- hop count, keepalives, malformed messages.
function route_reqinit()
    if not KSR.is_myself_srcip() then
        local srcip = KSR.kx.get_srcip()
        if KSR.htable.sht_match_name("ipban", "eq", srcip) > 0 then
            KSR.dbg("request from banned " .. srcip .. ":" .. KSR.kx.get_srcport()
                .. " (" .. KSR.kx.get_method() .. " from " .. KSR.kx.get_furi() .. ")\n")
            KSR.x.exit()
        end
        if KSR.pike.pike_check_req() < 0 then
            KSR.err("pike: flood of " .. KSR.kx.get_method() .. " from "
                .. srcip .. ":" .. KSR.kx.get_srcport() .. ", banned\n")
            KSR.htable.sht_seti("ipban", srcip, 1)
            KSR.x.exit()
        end
        local ua = KSR.kx.gete_ua()
        for _, scanner in ipairs(SCANNERS) do
            if string.find(ua, scanner, 1, true) then
                KSR.err("scanner " .. ua .. " from " .. srcip .. ", banned\n")
                KSR.htable.sht_seti("ipban", srcip, 1)
                KSR.x.exit()
            end
        end
    end

    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        KSR.x.exit()
    end

    if KSR.is_OPTIONS() and KSR.is_myself_ruri() and KSR.corex.has_ruri_user() < 0 then
        KSR.sl.sl_send_reply(200, "Keepalive")
        KSR.x.exit()
    end

    if KSR.sanity.sanity_check(1511, 7) < 0 then
        KSR.err("malformed SIP message from " .. KSR.kx.get_srcip() .. ":"
            .. KSR.kx.get_srcport() .. "\n")
        KSR.x.exit()
    end
end

-- Requests inside a dialog follow its route set.
function route_withindlg()
    if KSR.siputils.has_totag() < 0 then
        return 1
    end
    if KSR.rr.loose_route() > 0 then
        route_dlguri()
        if KSR.is_BYE() then
            KSR.setflag(FLT_ACC)
            KSR.setflag(FLT_ACCFAILED)
        elseif KSR.is_ACK() then
            route_natmanage()
        elseif KSR.is_NOTIFY() then
            KSR.rr.record_route()
        end
        route_relay()
        KSR.x.exit()
    end
    if KSR.is_ACK() then
        if KSR.tm.t_check_trans() > 0 then
            route_relay()
        end
        KSR.x.exit()
    end
    KSR.sl.sl_send_reply(404, "Not here")
    KSR.x.exit()
end

-- Registrations are saved in the location table.
function route_registrar()
    if not KSR.is_REGISTER() then
        return 1
    end
    if KSR.isflagset(FLT_NATS) then
        KSR.setbflag(FLB_NATB)
        KSR.setbflag(FLB_NATSIPPING)
    end
    -- Over TCP, answer on the REGISTER's own connection only.
    KSR.set_reply_no_connect()
    if KSR.registrar.save("location", 0) < 0 then
        KSR.sl.sl_reply_error()
    end
    KSR.x.exit()
end

-- Calls to local users go to their registered contacts.
function route_location()
    local rc = KSR.registrar.lookup("location")
    if rc < 0 then
        KSR.tm.t_newtran()
        if rc == -1 or rc == -3 then
            KSR.sl.send_reply(404, "Not Found")
            KSR.x.exit()
        elseif rc == -2 then
            KSR.sl.send_reply(405, "Method Not Allowed")
            KSR.x.exit()
        end
    end
    if KSR.is_INVITE() then
        KSR.setflag(FLT_ACCMISSED)
    end
    route_relay()
    KSR.x.exit()
end

-- Trusted peers pass; everyone else authenticates as a subscriber; the
-- proxy is no open relay.
function route_auth()
    if not KSR.kx.ifdef("WITH_AUTH") then
        return 1
    end
    if not KSR.is_REGISTER() and KSR.permissions.allow_source_address(1) > 0 then
        return 1
    end
    if KSR.is_REGISTER() or KSR.is_myself_furi() then
        if KSR.auth_db.auth_check(KSR.kx.gete_fhost(), "subscriber", 1) < 0 then
            KSR.auth.auth_challenge(KSR.kx.gete_fhost(), 0)
            KSR.x.exit()
        end
        if not KSR.is_method_in("RP") then
            KSR.auth.consume_credentials()
        end
    end
    if not KSR.is_myself_furi() and not KSR.is_myself_ruri() then
        KSR.sl.sl_send_reply(403, "Not relaying")
        KSR.x.exit()
    end
    return 1
end

-- Callers behind NAT: answer to their source, fix their contacts.
function route_natdetect()
    if not KSR.kx.ifdef("WITH_NAT") then
        return 1
    end
    KSR.force_rport()
    if KSR.nathelper.nat_uac_test(19) > 0 then
        if KSR.is_REGISTER() then
            KSR.nathelper.fix_nated_register()
        elseif KSR.siputils.is_first_hop() > 0 then
            KSR.nathelper.set_contact_alias()
        end
        KSR.setflag(FLT_NATS)
    end
    return 1
end

-- Media relaying for NATed calls, when an RTP relay module is granted.
function route_natmanage()
    if KSR.siputils.is_request() > 0 and KSR.siputils.has_totag() > 0
        and KSR.rr.check_route_param("nat=yes") > 0 then
        KSR.setbflag(FLB_NATB)
    end
    if not (KSR.isflagset(FLT_NATS) or KSR.isbflagset(FLB_NATB)) then
        return 1
    end
    if KSR.rtpengine then
        KSR.rtpengine.rtpengine_manage("")
    end
    if KSR.siputils.is_request() > 0 and KSR.siputils.has_totag() < 0
        and KSR.tmx.t_is_branch_route() > 0 then
        KSR.rr.add_rr_param(";nat=yes")
    end
    if KSR.siputils.is_reply() > 0 and KSR.isbflagset(FLB_NATB) then
        KSR.nathelper.set_contact_alias()
    end
    return 1
end

-- In-dialog requests to a NATed peer: its alias becomes the destination.
function route_dlguri()
    if not KSR.isdsturiset() then
        KSR.nathelper.handle_ruri_alias()
    end
    return 1
end

-- Requests for other domains are relayed as they are.
function route_sipout()
    if KSR.is_myself_ruri() then
        return 1
    end
    KSR.hdr.append("P-Hint: outbound\r\n")
    route_relay()
    KSR.x.exit()
end

-- Each outgoing branch.
function branch_manage()
    KSR.dbg("new branch [" .. KSR.pv.get("$T_branch_idx") .. "] to "
        .. KSR.kx.get_ruri() .. "\n")
    route_natmanage()
    return 1
end

-- Each reply of a relayed transaction.
function onreply_manage()
    local scode = KSR.kx.get_status()
    if scode > 100 and scode < 299 then
        route_natmanage()
    end
    return 1
end

-- The transaction ended with a negative reply.
function failure_manage()
    route_natmanage()
    if KSR.tm.t_is_canceled() > 0 then
        return 1
    end
    return 1
end

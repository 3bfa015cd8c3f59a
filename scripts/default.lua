-- kemibox's embedded default routing script: `kemibox run` uses it when no
-- script is given. A registrar with digest authentication and a proxy
-- between its registered users, laid out like Kamailio's basic KEMI
-- example so an operator finds the routes where they expect them:
--
--   reqinit    loops, malformed requests
--   natdetect  UAs behind NAT are remembered where they really are
--   withindlg  requests inside a dialog follow their Route set
--   auth       REGISTER and calls from our users must authenticate
--   registrar  REGISTER saves the contacts in "location"
--   location   calls to our users go to their registered contacts
--   relay      stateful relay, with branch, reply and failure routes
--
-- Subscribers are added with `kemibox user add alice@DOMAIN PASSWORD`;
-- the realm is the From domain.

-- Flags, as in Kamailio's example configuration.
local FLT_ACC = 1
local FLT_ACCFAILED = 3

-- Initial checks: loops and malformed requests.
local function ksr_route_reqinit()
    if KSR.maxfwd.process_maxfwd(10) < 0 then
        KSR.sl.sl_send_reply(483, "Too Many Hops")
        KSR.x.exit()
    end
    if KSR.is_OPTIONS() and KSR.is_myself_ruri() and KSR.corex.has_ruri_user() < 0 then
        KSR.sl.sl_send_reply(200, "Keepalive")
        KSR.x.exit()
    end
    if KSR.sanity.sanity_check(17895, 7) < 0 then
        KSR.err("malformed SIP request from " .. KSR.kx.get_srcip() .. ":" .. KSR.kx.get_srcport() .. "\n")
        KSR.x.exit()
    end
end

-- UAs behind NAT (nathelper's test 19: private Contact, Via not the
-- source address or port): a REGISTER keeps its source as the binding's
-- received address; other requests carry it in a Contact alias, which
-- in-dialog requests come back with (handle_ruri_alias below).
local function ksr_route_natdetect()
    if not KSR.nathelper then
        return
    end
    if KSR.nathelper.nat_uac_test(19) > 0 then
        if KSR.is_REGISTER() then
            KSR.nathelper.fix_nated_register()
        elseif KSR.siputils.is_first_hop() > 0 then
            KSR.nathelper.set_contact_alias()
        end
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
        if KSR.nathelper and not KSR.isdsturiset() then
            -- The next hop is a UA behind NAT: go where its alias says.
            KSR.nathelper.handle_ruri_alias()
        end
        if KSR.is_BYE() then
            KSR.setflag(FLT_ACC)
            KSR.setflag(FLT_ACCFAILED)
        end
        ksr_route_relay()
        return
    end
    if KSR.is_SUBSCRIBE() and KSR.is_myself_ruri() then
        -- A resubscription to us: no presence server here.
        KSR.sl.sl_send_reply(404, "Not here")
        KSR.x.exit()
    end
    if KSR.is_ACK() then
        -- ACK without a Route: relayed if it matches a transaction, else
        -- absorbed.
        if KSR.tm.t_check_trans() > 0 then
            ksr_route_relay()
        end
        KSR.x.exit()
    end
    KSR.sl.sl_send_reply(404, "Not here")
    KSR.x.exit()
end

-- REGISTER and requests from our own domain must carry valid credentials
-- of a subscriber; others may only call our users.
local function ksr_route_auth()
    if not KSR.auth then
        return
    end
    if KSR.is_REGISTER() or KSR.is_myself_furi() then
        local realm = KSR.kx.gete_fhost()
        if KSR.auth_db.auth_check(realm, "subscriber", 1) < 0 then
            KSR.auth.auth_challenge(realm, 0)
            KSR.x.exit()
        end
        -- The credentials were for us: the next hop needs not see them.
        if not KSR.is_method_in("RP") then
            KSR.auth.consume_credentials()
        end
    end
    if (not KSR.is_myself_furi()) and (not KSR.is_myself_ruri()) then
        KSR.sl.sl_send_reply(403, "Not relaying")
        KSR.x.exit()
    end
end

-- REGISTER: save the contacts (save replies itself, also on error).
local function ksr_route_registrar()
    if not KSR.is_REGISTER() then
        return
    end
    KSR.registrar.save("location", 0)
    KSR.x.exit()
end

-- Calls to our users: their registered contacts, or 404.
local function ksr_route_location()
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
    ksr_route_relay()
end

-- Requests to other domains, from authenticated users of ours.
local function ksr_route_sipout()
    if KSR.is_myself_ruri() then
        return
    end
    KSR.hdr.append("P-Hint: outbound\r\n")
    ksr_route_relay()
end

function ksr_request_route()
    ksr_route_reqinit()
    ksr_route_natdetect()

    -- CANCEL goes where its INVITE went.
    if KSR.is_CANCEL() then
        if KSR.tm.t_check_trans() > 0 then
            ksr_route_relay()
        end
        return
    end

    ksr_route_withindlg()

    -- Retransmissions of a request in progress are absorbed here.
    if KSR.tmx.t_precheck_trans() > 0 then
        KSR.tm.t_check_trans()
        return
    end
    if KSR.tm.t_check_trans() == 0 then
        return
    end

    ksr_route_auth()

    -- Record-Route so the dialog's later requests come through us.
    KSR.hdr.remove("Route")
    if KSR.is_method_in("IS") then
        KSR.rr.record_route()
    end
    if KSR.is_INVITE() then
        KSR.setflag(FLT_ACC)
    end

    ksr_route_sipout()
    ksr_route_registrar()

    if KSR.corex.has_ruri_user() < 0 then
        KSR.sl.sl_send_reply(484, "Address Incomplete")
        KSR.x.exit()
    end

    ksr_route_location()
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
